"""One build per ``--out``: a lock beside the folder that dies with its process; the hidden names beside it."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from pathlib import Path
from typing import Any, Dict, Optional

from ferv39k_hf.errors import BuildError

try:  # POSIX; elsewhere builds are not locked (the placement's own checks still hold)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

LOCK_TOOL = "ferv39k-hf build lock"
_NAME_BYTES = 255  # the longest file name most file systems take
_STEM_BYTES = 200  # a hidden name's stem past this is shortened, leaving room for ".partial-PID-COUNT"
_KEPT_BYTES = 160  # what a shortened stem keeps of the name, before "~" and a hash of the whole name


def hidden_stem(out: Path) -> str:
    """``.NAME``, the start of every hidden name beside ``out`` (lock, partial, old); a name too long to take
    a suffix within 255 bytes is cut and ends in a hash of the whole, so two long names never share one."""
    name = out.name
    if len(os.fsencode("." + name)) <= _STEM_BYTES:
        return "." + name
    kept = name
    while len(os.fsencode(kept)) > _KEPT_BYTES:
        kept = kept[:-1]
    return f".{kept}~{hashlib.sha256(os.fsencode(name)).hexdigest()[:16]}"


def lock_path(out: Path) -> Path:
    return out.parent / f"{hidden_stem(out)}.lock"


class BuildLock:
    """The held lock of one ``--out``; :meth:`release` (or leaving the ``with`` block) removes the lock file."""

    def __init__(self, path: Path, fd: Optional[int]):
        self.path, self.fd = path, fd

    def __enter__(self) -> "BuildLock":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            if _same_file(self.fd, self.path):  # still ours: remove it before letting go
                os.unlink(self.path)
        except OSError:
            pass
        finally:
            os.close(self.fd)
            self.fd = None


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path, follow_symlinks=False))
    except OSError:
        return False


def lock_out(out: Path) -> BuildLock:
    """Take ``out``'s lock, or BuildError at once naming the build that holds it.

    The lock is an ``flock`` on ``.NAME.lock`` beside ``out``: the kernel drops it when its process ends, however
    it ends, so a killed build never blocks the next one. The file names its holder, for the message.
    """
    path = lock_path(out)
    if fcntl is None:  # pragma: no cover
        return BuildLock(path, None)
    for _ in range(20):  # the holder may remove the file between our open and our lock: open it again
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
        except OSError as err:
            raise BuildError(f"{path}: cannot open the lock file of {out} ({err.strerror}); it is made by "
                             "ferv39k-hf build: remove it if no build is running") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe(_read_holder(fd))
            os.close(fd)
            raise BuildError(f"{out} is being built by {holder}; wait for it to finish, or choose another --out") \
                from None
        if not _same_file(fd, path):
            os.close(fd)
            continue
        _write_holder(fd, out)
        return BuildLock(path, fd)
    raise BuildError(f"{path}: could not take the lock of {out}: other builds keep replacing it")


def _write_holder(fd: int, out: Path) -> None:
    text = json.dumps({"tool": LOCK_TOOL, "out": str(out), "host": socket.gethostname(), "pid": os.getpid(),
                       "started": time.strftime("%Y-%m-%d %H:%M:%S")}) + "\n"
    os.ftruncate(fd, 0)
    os.pwrite(fd, text.encode("utf-8"), 0)


def _read_holder(fd: int) -> Dict[str, Any]:
    try:
        holder = json.loads(os.pread(fd, 4096, 0).decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return {}  # it has the lock but has not written its name yet
    return holder if isinstance(holder, dict) and holder.get("tool") == LOCK_TOOL else {}


def _describe(holder: Dict[str, Any]) -> str:
    if not holder:
        return "another ferv39k-hf build"
    where = "" if holder.get("host") == socket.gethostname() else f" on host {str(holder.get('host'))[:80]}"
    return f"another ferv39k-hf build (process {holder.get('pid')}{where}, started {holder.get('started')})"
