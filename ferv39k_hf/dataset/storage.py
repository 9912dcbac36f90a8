"""Reads from a local folder or object storage with stated patience: timeouts, bounded retries, one-line errors."""

from __future__ import annotations

import logging
import os
import posixpath
import time
from dataclasses import dataclass, fields
from typing import Any, Callable, Dict, Iterator, Mapping, Optional, Tuple, TypeVar

from ferv39k_hf.errors import Ferv39kError

logger = logging.getLogger(__name__)

__all__ = ["StreamError", "StorageMissing", "StoragePatience", "PATIENCE_ENV", "is_remote", "join",
           "storage_options_for", "filesystem", "patiently", "read_bytes", "is_transient"]

PATIENCE_ENV = "FERV39K_HF_STORAGE_PATIENCE"
T = TypeVar("T")
# S3 error codes that mean "slow down" or "try again", whatever the HTTP status says
_RETRY_CODES = {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "RequestTimeTooSkewed",
                "InternalError", "ServiceUnavailable", "RequestLimitExceeded", "TooManyRequests"}


class StreamError(Ferv39kError):
    """A dataset location that cannot be read or streamed: no card, no such split, a short or cut shard,
    storage that refuses or does not answer. The message is one line naming the file or URL.

    Raised in a DataLoader worker, torch raises it again in the main process with the worker's
    traceback as its message; that message is cut back to the error's own line here, the traceback
    kept as a note (shown with a traceback, under ``--debug``).
    """

    def __init__(self, message: object = "", *args: object):
        text = str(message)
        prefix = f"{type(self).__module__}.{type(self).__qualname__}: "
        lines = [line for line in text.splitlines() if line.strip()]
        if text.startswith("Caught ") and "\nOriginal Traceback" in text and lines[-1].startswith(prefix):
            if hasattr(self, "add_note"):  # Python >= 3.11
                self.add_note(text)
            text = lines[-1][len(prefix):]
        super().__init__(text, *args)


class StorageMissing(StreamError, FileNotFoundError):
    """A file, prefix or bucket that is not there (``no_bucket``: the bucket itself)."""

    no_bucket = False


@dataclass(frozen=True)
class StoragePatience:
    """How long a read of the storage may take before the stream gives up, and how often it is tried.

    Each read (a card, a shard's footer, one row group of a shard) is tried at most ``attempts``
    times. A try waits at most ``connect_timeout`` seconds for a connection and ``read_timeout``
    seconds for each chunk of the answer (S3: botocore's ``Config``; its own retries and s3fs's
    are turned off, so these tries are all there are). Between tries it waits ``backoff`` seconds,
    doubled each time up to ``max_backoff``, logging ``retrying URL in N s (attempt k of n)``.
    Only transient failures are retried (connection refused or reset, timeouts, HTTP 5xx, throttling);
    a missing file or refused credentials fails at once. :meth:`worst_case_s` bounds one read.

    Set it with ``FERV39K_HF_STORAGE_PATIENCE="read_timeout=60,attempts=10"`` (any of the fields)
    or pass one to :func:`~ferv39k_hf.dataset.streaming.stream`.
    """

    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    attempts: int = 8
    backoff: float = 1.0
    max_backoff: float = 16.0

    def __post_init__(self) -> None:
        if int(self.attempts) < 1:
            raise ValueError(f"storage patience: attempts must be at least 1, not {self.attempts}")
        for name in ("connect_timeout", "read_timeout", "backoff", "max_backoff"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and value >= 0 and value == value):
                raise ValueError(f"storage patience: {name} must be a number of seconds >= 0, not {value!r}")
        if self.connect_timeout <= 0 or self.read_timeout <= 0:
            raise ValueError("storage patience: the timeouts must be more than 0 s")

    def wait_before(self, attempt: int) -> float:
        """Seconds waited before try ``attempt`` (2, 3, ...): ``backoff`` doubled each time, capped."""
        return float(min(self.backoff * 2 ** max(0, attempt - 2), self.max_backoff))

    def worst_case_s(self) -> float:
        """The longest one read can take before it fails, when every try stalls to its timeouts."""
        waits = sum(self.wait_before(a) for a in range(2, int(self.attempts) + 1))
        return int(self.attempts) * (self.connect_timeout + self.read_timeout) + waits

    def describe(self) -> str:
        """The settings in words, for messages: ``"8 tries, connect timeout 10 s, read timeout 30 s, ..."``."""
        return (f"{self.attempts} tries, connect timeout {self.connect_timeout:g} s, read timeout "
                f"{self.read_timeout:g} s, waits from {self.backoff:g} s doubling to {self.max_backoff:g} s")

    @classmethod
    def parse(cls, text: str) -> "StoragePatience":
        """``"read_timeout=60,attempts=10"`` -> StoragePatience(read_timeout=60, attempts=10, rest default)."""
        names = {f.name: f.type for f in fields(cls)}
        values: Dict[str, Any] = {}
        for item in filter(None, (part.strip() for part in str(text).split(","))):
            name, sep, value = item.partition("=")
            name = name.strip()
            if not sep or name not in names:
                raise ValueError(f"storage patience {text!r}: {item!r} is not NAME=VALUE with NAME one of "
                                 f"{', '.join(names)}")
            try:
                values[name] = int(value) if name == "attempts" else float(value)
            except ValueError:
                raise ValueError(f"storage patience {text!r}: {name} needs a number, not {value.strip()!r}") from None
        return cls(**values)

    @classmethod
    def from_env(cls) -> "StoragePatience":
        """The patience of ``FERV39K_HF_STORAGE_PATIENCE`` (unset: the defaults)."""
        try:
            return cls.parse(os.environ.get(PATIENCE_ENV, ""))
        except ValueError as err:
            raise StreamError(f"{PATIENCE_ENV}: {err}") from None


def is_remote(location: "os.PathLike[str] | str") -> bool:
    """Whether ``location`` is an fsspec URL other than ``file://`` (``s3://b/x`` yes; ``/data/x``, ``C:\\x`` no)."""
    text = os.fspath(location)
    scheme, sep, _ = text.partition("://")
    return bool(sep) and len(scheme) > 1 and scheme.replace("+", "").isalnum() and scheme != "file"


def join(location: "os.PathLike[str] | str", *parts: str) -> str:
    """``location`` with ``parts`` appended: ``/`` for a URL, the OS separator for a local path."""
    if is_remote(location):
        return posixpath.join(os.fspath(location).rstrip("/"), *parts)
    return os.path.join(os.fspath(location), *parts)


def _is_s3(location: str) -> bool:
    return os.fspath(location).startswith(("s3://", "s3a://"))


def storage_options_for(location: "os.PathLike[str] | str", storage_options: Optional[Mapping[str, Any]] = None,
                        patience: Optional[StoragePatience] = None) -> Dict[str, Any]:
    """fsspec options for ``location``: ``storage_options`` as given, plus the standard environment settings.

    For ``s3://`` the endpoint comes from ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` (as the AWS
    CLI reads them; older botocore ignores the variables, so it is passed explicitly); credentials
    and region are left to botocore's usual chain (``AWS_ACCESS_KEY_ID``, ``AWS_PROFILE``, ...). With
    ``patience``, botocore's ``Config`` gets its connect and read timeouts and no retries of its own
    (``config_kwargs``; values given in ``storage_options`` win). Other storages read their own
    standard variables (``GOOGLE_APPLICATION_CREDENTIALS``, ``HF_TOKEN``).

    Example: ``storage_options_for("s3://bucket/ferv39k")`` -> ``{"client_kwargs": {"endpoint_url":
    "http://127.0.0.1:9000"}}`` when ``AWS_ENDPOINT_URL=http://127.0.0.1:9000``; ``{}`` for a local path.
    """
    options = dict(storage_options or {})
    if _is_s3(os.fspath(location)):
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        client = dict(options.get("client_kwargs") or {})
        if endpoint and "endpoint_url" not in client and "endpoint_url" not in options:
            options["client_kwargs"] = {**client, "endpoint_url": endpoint}
        if patience is not None:
            config = {"connect_timeout": patience.connect_timeout, "read_timeout": patience.read_timeout,
                      "retries": {"total_max_attempts": 1, "mode": "standard"}}
            options["config_kwargs"] = {**config, **dict(options.get("config_kwargs") or {})}
    return options


def filesystem(url: str, options: Mapping[str, Any]) -> Tuple[Any, str]:
    """(fsspec filesystem, path in it) for ``url``; an S3 one with s3fs's own retries turned off.

    s3fs retries a failed call ``S3FileSystem.retries`` times (5) on top of botocore's retries, so
    one stalled call waited timeouts x 5 x botocore's tries, silently. The stream's retries
    (:func:`patiently`) log and count; s3fs's are set to one try where that attribute is an int
    on the class (checked here: another s3fs keeps its own, which then multiply the tries).
    """
    import fsspec

    fs, path = fsspec.core.url_to_fs(url, **dict(options))
    if is_remote(url) and isinstance(getattr(type(fs), "retries", None), int) and fs.retries != 1:
        fs.retries = 1
    return fs, path


def _chain(err: BaseException) -> Iterator[BaseException]:
    seen = 0
    while err is not None and seen < 12:
        yield err
        err, seen = err.__cause__ or err.__context__, seen + 1


def _transient_types() -> Tuple[type, ...]:
    found: list = [ConnectionError, TimeoutError]
    for module, names in (("botocore.exceptions", ("ConnectionError", "HTTPClientError", "ResponseStreamingError")),
                          ("aiohttp", ("ClientConnectionError", "ClientPayloadError")),
                          ("fsspec.exceptions", ("FSTimeoutError",)),
                          ("urllib3.exceptions", ("ProtocolError", "TimeoutError")),
                          ("requests.exceptions", ("ConnectionError", "Timeout")),
                          ("httpx", ("TransportError",))):
        try:
            imported = __import__(module, fromlist=list(names))
        except ImportError:
            continue
        found += [getattr(imported, name) for name in names if isinstance(getattr(imported, name, None), type)]
    return tuple(found)


def _http_status(err: BaseException) -> Tuple[Optional[int], str]:
    response = getattr(err, "response", None)
    if isinstance(response, dict):  # botocore ClientError
        status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
        return status, str((response.get("Error") or {}).get("Code") or "")
    status = getattr(response, "status_code", None) or getattr(err, "status", None)
    return (status if isinstance(status, int) else None), ""


def is_transient(err: BaseException) -> bool:
    """Whether trying again may help: a refused, reset or timed-out connection, HTTP 5xx or 429, throttling."""
    if isinstance(err, (StreamError, PermissionError, FileNotFoundError)):
        return False
    transient = _transient_types()
    for cause in _chain(err):
        status, code = _http_status(cause)
        if status is not None or code:
            return code in _RETRY_CODES or (status is not None and (status >= 500 or status == 429))
        if isinstance(cause, transient):
            return True
    return False


def _reason(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    text = text if len(text) <= 200 else text[:197] + "..."
    return text if type(err).__name__ in text else f"{type(err).__name__}: {text}"


def _endpoint(options: Mapping[str, Any]) -> str:
    return (options.get("client_kwargs") or {}).get("endpoint_url") or options.get("endpoint_url") or "AWS S3"


def _missing(url: str, options: Mapping[str, Any]) -> StorageMissing:
    """The error for a missing ``url``, saying whether its bucket is missing too."""
    if _is_s3(url):
        bucket = url.split("://", 1)[1].split("/", 1)[0]
        try:
            fs, _ = filesystem(url, options)
            there = fs.exists(bucket)
        except Exception:  # noqa: BLE001 -- the question is only asked to word the message
            there = True
        if not there:
            missing = StorageMissing(f"{url}: there is no bucket {bucket!r} at {_endpoint(options)} (or these "
                                     "credentials cannot see it)")
            missing.no_bucket = True
            return missing
    return StorageMissing(f"{url} does not exist")


def describe(url: str, what: str, err: BaseException, options: Mapping[str, Any]) -> str:
    """One line for a read of ``url`` that failed with ``err`` and is not worth trying again."""
    if isinstance(err, PermissionError) or any(_http_status(c)[0] == 403 for c in _chain(err)):
        if not is_remote(url):
            return f"{url}: access denied while {what} ({_reason(err)}): check the file's permissions"
        hint = " (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, AWS_PROFILE)" if _is_s3(url) else ""
        return (f"{url}: access denied while {what} ({_reason(err)}): check the credentials{hint} and that they "
                "may read this location")
    if isinstance(err, FileNotFoundError):
        return str(_missing(url, options))
    return f"{url}: {what} failed: {_reason(err)}"


def patiently(url: str, what: str, action: Callable[[int], T], patience: StoragePatience,
              options: Optional[Mapping[str, Any]] = None) -> T:
    """``action(attempt)`` (attempt 1, 2, ...), tried again on transient errors within ``patience``.

    ``what`` says what the action does, for the messages (``"reading the card"``). A local path
    gets one try. Every retry logs one warning: ``retrying URL in 4 s (attempt 3 of 8): reason``.
    Failures end in :class:`StreamError` (one line naming ``url``, what was tried and why);
    :class:`StorageMissing` when the file or bucket is not there.
    """
    options = options or {}
    tries = int(patience.attempts) if is_remote(url) else 1
    started = time.monotonic()
    for attempt in range(1, tries + 1):
        try:
            return action(attempt)
        except StreamError:
            raise
        except Exception as err:  # noqa: BLE001 -- sorted into transient or not, and reported in one line
            if isinstance(err, FileNotFoundError):
                raise _missing(url, options) from err
            if not is_transient(err):
                raise StreamError(describe(url, what, err, options)) from err
            if attempt == tries:
                where = f" at {_endpoint(options)}" if _is_s3(url) else ""
                raise StreamError(f"{url}: gave up {what}{where} after {tries} tries over "
                                  f"{time.monotonic() - started:.1f} s ({patience.describe()}; set "
                                  f"{PATIENCE_ENV} for more): {_reason(err)}") from err
            wait = patience.wait_before(attempt + 1)
            logger.warning("retrying %s in %g s (attempt %d of %d): %s failed: %s", url, wait, attempt + 1, tries,
                           what, _reason(err))
            time.sleep(wait)
    raise AssertionError("unreachable")


def read_bytes(url: str, options: Mapping[str, Any], patience: StoragePatience, what: str = "reading it") -> bytes:
    """The whole of the (small) file at ``url``, read within ``patience``."""
    def read(_attempt: int) -> bytes:
        fs, path = filesystem(url, options)
        with fs.open(path, "rb") as handle:
            return handle.read()

    return patiently(url, what, read, patience, options)
