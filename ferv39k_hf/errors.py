"""The package's error types. Every message names the file, clip or line at fault."""


class Ferv39kError(Exception):
    """Base of the errors the command line reports without a traceback."""


class LayoutError(Ferv39kError, FileNotFoundError):
    """A part of the archive (split file, frames folder, zip) cannot be found or read."""


class BuildError(Ferv39kError):
    """A build stopped: a damaged clip under --on-error raise, or an output folder in the way."""
