"""The package's error types. Every message names the file, clip or line at fault."""


class Ferv39kError(Exception):
    """Base of the errors the command line reports without a traceback."""


class LayoutError(Ferv39kError, FileNotFoundError):
    """A part of the archive (split file, frames folder, zip) cannot be found or read."""


class BuildError(Ferv39kError):
    """A build stopped: a damaged clip under --on-error raise, or an output folder in the way."""


QUOTED_CHARS = 80  # how much of a long value a message shows


def quoted(value: object, limit: int = QUOTED_CHARS) -> str:
    """``repr(value)``, or that of its first ``limit`` characters and how long it is: a message stays one short
    line whatever the input holds."""
    text = value if isinstance(value, str) else str(value)
    if len(text) <= limit:
        return repr(value)
    return f"{text[:limit]!r}... ({len(text):,} characters)"
