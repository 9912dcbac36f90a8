"""Guards every writer: nothing is written in the archive, and only folders ferv39k-hf build marked are replaced.

Every writer checks its target with :func:`~ferv39k_hf.archive.readonly.check_outside_archive`. A build folder carries a
marker file, :data:`MARKER`, naming the tool and every file it wrote; a
folder is replaced only when its marker is sound and it holds nothing else.
A build's temporary folder is marked first thing with its host and process,
so that a later build can tell a crashed one's leftovers from a live one's;
a build killed at any instant leaves what the next one removes, keeps until
it has succeeded, or puts back (see :func:`recover_leftovers`).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from ferv39k_hf.archive.buildlock import hidden_stem
from ferv39k_hf.archive.readonly import OutputRefused, check_outside_archive, real_path  # noqa: F401  (public)
from ferv39k_hf.errors import BuildError
from ferv39k_hf.taxonomy import CONFIG_NAMES

MARKER = ".ferv39k-hf-build.json"
_MARKER_STAGED = MARKER + ".new"  # the marker being written, renamed over MARKER when whole
TOOL = "ferv39k-hf build"
FORMAT = 1


# -- the marker of a build folder --------------------------------------------------------

def write_marker(folder: Path, files: List[str], *, writer: bool) -> None:
    """Mark ``folder`` as the build's, listing ``files``; ``writer`` adds this host and process."""
    marker: Dict[str, Any] = {"tool": TOOL, "format": FORMAT, "version": _version(), "files": sorted(files)}
    if writer:
        marker.update(host=socket.gethostname(), pid=os.getpid())
    # Written aside and renamed over: a reader sees the old marker or the new one, never half of one.
    staged = folder / _MARKER_STAGED
    staged.write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(staged, folder / MARKER)


def _version() -> str:
    from ferv39k_hf import __version__

    return __version__


def read_marker(folder: Path) -> Dict[str, Any]:
    """The marker of ``folder``; OutputRefused saying why when it is missing or not a sound marker."""
    path = folder / MARKER
    if not path.is_file() or path.is_symlink():
        raise OutputRefused(f"{folder} was not made by ferv39k-hf build (no marker {MARKER})")
    try:
        marker = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise OutputRefused(f"{folder}: its marker {MARKER} is unreadable ({err})") from None
    files = marker.get("files") if isinstance(marker, dict) else None
    if not isinstance(marker, dict) or marker.get("tool") != TOOL or not isinstance(files, list) \
            or not all(isinstance(f, str) and _is_relative(f) for f in files):
        raise OutputRefused(f"{folder}: its marker {MARKER} is not one ferv39k-hf build writes")
    return marker


def _is_relative(name: str) -> bool:
    parts = name.split("/")
    return bool(name) and not name.startswith("/") and all(p not in ("", ".", "..") for p in parts)


def _entries(folder: Path) -> Tuple[List[str], List[str], List[str]]:
    """Relative paths under ``folder``: regular files, folders, and anything else (links, devices)."""
    files, dirs, other = [], [], []
    for top, subdirs, names in os.walk(folder):  # does not follow links to folders
        rel_top = Path(top).relative_to(folder).as_posix()
        prefix = "" if rel_top == "." else rel_top + "/"
        for name in subdirs:
            full = os.path.join(top, name)
            (other if os.path.islink(full) else dirs).append(prefix + name)
        for name in names:
            full = os.path.join(top, name)
            kind = files if os.path.isfile(full) and not os.path.islink(full) else other
            kind.append(prefix + name)
    return files, dirs, other


def _foreign(folder: Path, is_ours, own_dirs: Tuple[str, ...] = ()) -> List[str]:
    """What under ``folder`` the build did not write: ``is_ours(rel)`` decides for files; their folders, and
    ``own_dirs``, are the build's too."""
    files, dirs, other = _entries(folder)
    ours = {f for f in files if f in (MARKER, _MARKER_STAGED) or is_ours(f)}
    parents = {above.as_posix() for f in ours for above in Path(f).parents} | set(own_dirs)
    extra = [f for f in files if f not in ours] + [d for d in dirs if d not in parents] + other
    return sorted(extra)


def folder_problem(folder: Path, marker: Optional[Dict[str, Any]] = None) -> Optional[str]:
    """Why ``folder`` is not a finished build holding only the files its marker lists; None when it is."""
    if folder.is_symlink():
        return f"{folder} is a symbolic link (to {os.readlink(folder)}), not a folder ferv39k-hf build made"
    if not folder.is_dir():
        return f"{folder} exists and is not a folder"
    if marker is None:
        try:
            marker = read_marker(folder)
        except OutputRefused as err:
            return str(err)
    extra = _foreign(folder, set(marker["files"]).__contains__)
    if extra:
        shown = ", ".join(extra[:3]) + (f" and {len(extra) - 3} more" if len(extra) > 3 else "")
        return f"{folder} holds {len(extra)} path(s) that ferv39k-hf build did not write ({shown})"
    return None


def check_build_folder(folder: Path) -> Dict[str, Any]:
    """The marker of a finished build folder that --overwrite may replace; OutputRefused saying why otherwise."""
    problem = folder_problem(folder)
    if problem is not None:
        advice = "move them out of it" if " holds " in problem else "remove it yourself"
        raise OutputRefused(f"{problem}; --overwrite replaces only a folder made by ferv39k-hf build and holding "
                            f"nothing else: {advice} or choose another --out")
    return read_marker(folder)


def _is_partial_file(rel: str) -> bool:
    """A file a build writes into its temporary folder (its names are not known before it finishes)."""
    parts = rel.split("/")
    if len(parts) == 1:
        return rel in ("README.md", "build_report.json")
    return len(parts) == 3 and parts[0] == "data" and parts[1] in CONFIG_NAMES \
        and parts[2].endswith((".parquet", ".partial"))


# -- preparing, placing and cleaning up a build ------------------------------------------

def check_build_out(out: Path, root: "os.PathLike[str] | str", overwrite: bool) -> None:
    """Refuse an --out in the archive, and an existing one that --overwrite may not or was not asked to replace."""
    check_outside_archive(out, root, "--out")
    if not (out.exists() or out.is_symlink()):
        return
    if not overwrite:
        raise OutputRefused(f"{out} already exists; pass --overwrite to replace a folder made by ferv39k-hf build, "
                            "or choose another --out")
    check_build_folder(out)


def start_build(out: Path, root: "os.PathLike[str] | str", overwrite: bool) -> Tuple[Path, List[str], List[Path]]:
    """With ``out``'s lock held (see :mod:`~ferv39k_hf.archive.buildlock`): handle dead builds' leftovers beside
    it, check ``out`` again, make the marked temporary folder.

    Returns the temporary folder, notes on what was removed, restored or kept, and the complete builds left by
    dead builds that :func:`remove_superseded` removes once this build is in place.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    notes, kept = recover_leftovers(out)
    try:
        check_build_out(out, root, overwrite)
    except OutputRefused as err:
        if not notes:
            raise
        raise OutputRefused(f"{err} (before that: {'; '.join(notes)})") from None
    tmp = _fresh_name(out, "partial", make=True)
    write_marker(tmp, [], writer=True)
    return tmp, notes, kept


def _fresh_name(out: Path, kind: str, *, make: bool) -> Path:
    """``.NAME.KIND-PID`` beside ``out`` (with a counter when taken); never an existing path."""
    base = out.parent / f"{hidden_stem(out)}.{kind}-{os.getpid()}"
    for count in range(1000):
        path = base if count == 0 else base.with_name(f"{base.name}-{count}")
        if make:
            try:
                path.mkdir()
                return path
            except FileExistsError:
                continue
        if not (path.exists() or path.is_symlink()):
            return path
    raise BuildError(f"no free name for a {kind} folder beside {out}; remove the {hidden_stem(out)}.{kind}-* "
                     "folders there")


def seal_build(tmp: Path) -> None:
    """Rewrite the temporary folder's marker with every file it now holds, without host and process."""
    files, _, _ = _entries(tmp)
    write_marker(tmp, [f for f in files if f != MARKER], writer=False)


def discard_partial(tmp: Path) -> None:
    """Remove this build's own temporary folder (made and marked by this process) after a failure."""
    shutil.rmtree(tmp, ignore_errors=True)


def place_build(tmp: Path, out: Path, overwrite: bool = True) -> List[str]:
    """Put the sealed build ``tmp`` at ``out``, replacing the build there; notes on anything left in place.

    What is there now is checked again: a folder that appeared without ``overwrite``, or one that is no longer
    a build folder, is refused and ``tmp`` kept. At every moment ``out`` is the old folder, absent, or the new
    one, and a build killed at any point leaves what the next build recovers (:func:`recover_leftovers`).
    """
    old = None
    if os.path.lexists(out):
        problem = None if overwrite else f"{out} appeared while the build ran and --overwrite was not given"
        problem = problem or folder_problem(out)
        if problem is not None:  # it changed while the build ran
            raise OutputRefused(f"{out} was not replaced: {problem}. The new build is in {tmp}; move what you "
                                f"want to keep out of {out} and run the build again, or rename {tmp} yourself")
        # Claim it first: if this process dies past here, the next build can tell the copy is a dead one's.
        write_marker(out, read_marker(out)["files"], writer=True)
        old = _fresh_name(out, "old", make=False)
        os.replace(out, old)
    if os.path.lexists(out):  # made in the instant since: rename would silently replace an empty folder
        raise OutputRefused(f"{out} appeared while the build was put in place; the new build is in {tmp}"
                            + (f" and the previous one in {old}" if old else ""))
    os.replace(tmp, out)
    if old is None:
        return []
    # Checked again just before deleting: it must still be our claimed build and hold nothing else.
    marker = _marker_or_none(old)
    problem = folder_problem(old, marker) if marker is not None else f"{old} lost its marker {MARKER}"
    if problem is None and not _claimed_by_me(marker):
        problem = f"{old}: another process claimed it"
    if problem is not None:
        return [f"kept the previous copy, moved aside to {old}, instead of deleting it: {problem}. "
                "Look through it and remove it yourself"]
    return [] if _remove(old) else [f"could not remove all of the previous copy, moved aside to {old}"]


def _remove(folder: Path) -> bool:
    """Delete a folder this module has just checked; whether it is gone (permissions may keep part of it)."""
    shutil.rmtree(folder, ignore_errors=True)
    return not (folder.exists() or folder.is_symlink())


def _marker_or_none(folder: Path) -> Optional[Dict[str, Any]]:
    try:
        return read_marker(folder)
    except OutputRefused:
        return None


def _claimed_by_me(marker: Dict[str, Any]) -> bool:
    return marker.get("host") == socket.gethostname() and marker.get("pid") == os.getpid()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except OSError:  # it exists but belongs to another user
        return True
    return True


def _leftover_state(path: Path, kind: str) -> Tuple[str, str]:
    """What the leftover ``path`` (kind 'partial' or 'old') is, and why: ('live', ''), ('leave', why),
    ('remove', '') for an unfinished dead build, ('complete', '') for a finished build a dead one left
    (a sealed partial, or an old copy moved aside). Called with ``out``'s lock held, so no build of this
    version is working on it."""
    if path.is_symlink() or not path.is_dir():
        return "leave", "not a folder"
    marker = _marker_or_none(path)
    if marker is None:
        return "leave", f"it has no sound marker {MARKER}"
    host, pid = marker.get("host"), marker.get("pid")
    if host is None and pid is None:  # sealed: every file listed; never placed by the build that made it
        extra = _foreign(path, set(marker["files"]).__contains__)
        return ("leave", f"it holds paths a build does not write ({', '.join(extra[:3])})") if extra \
            else ("complete", "")
    if host != socket.gethostname():
        return "leave", f"it was made on host {str(host)[:80]!r}"
    if type(pid) is not int or pid <= 0:  # 0 or -1 would address process groups in os.kill
        return "leave", "its marker names no process"
    if pid == os.getpid() or _alive(pid):
        return "live", ""  # a build of an earlier version (without the lock) in progress: say nothing
    if kind == "partial":  # its files are not listed yet: it may hold any the build writes
        extra = _foreign(path, _is_partial_file, ("data", *(f"data/{config}" for config in CONFIG_NAMES)))
    else:
        extra = _foreign(path, set(marker["files"]).__contains__)
    if extra:
        return "leave", f"it holds paths a build does not write ({', '.join(extra[:3])})"
    return ("remove" if kind == "partial" else "complete"), ""


def _leftovers(out: Path) -> List[Tuple[str, Path]]:
    """(kind, path) of the ``.NAME.partial-*`` and ``.NAME.old-*`` entries beside ``out``, by name."""
    prefixes = {f"{hidden_stem(out)}.partial-": "partial", f"{hidden_stem(out)}.old-": "old"}
    with os.scandir(out.parent) as found:
        names = sorted(entry.name for entry in found)
    return [(kind, out.parent / name) for name in names
            for prefix, kind in prefixes.items() if name.startswith(prefix)]


def recover_leftovers(out: Path) -> Tuple[List[str], List[Path]]:
    """Handle what dead builds on this host left beside ``out``; (notes, complete builds kept for now).

    An unfinished temporary folder is removed. A finished build that was never placed (sealed partial) or a
    previous build moved aside (``.old``) is kept until the new build is in place (:func:`remove_superseded`);
    when ``out`` is missing, the previous build moved aside is put back first. Anything not a dead build's
    marked folder holding only what a build writes is left alone and named.
    """
    notes: List[str] = []
    complete: List[Tuple[str, Path]] = []
    for kind, path in _leftovers(out):
        state, why = _leftover_state(path, kind)
        if state == "remove":
            done = "removed" if _remove(path) else "could not remove all of"
            notes.append(f"{done} {path}, left by a ferv39k-hf build on this host that is no longer running")
        elif state == "complete":
            complete.append((kind, path))
        elif why:
            notes.append(f"left {path} alone: {why}")
    olds = [path for kind, path in complete if kind == "old"]
    if olds and not os.path.lexists(out):
        old = max(olds, key=lambda p: p.stat().st_mtime_ns)
        write_marker(old, read_marker(old)["files"], writer=False)  # a finished build again, claimed by none
        os.replace(old, out)
        complete.remove(("old", old))
        notes.append(f"restored {out} from {old}: a build killed while replacing it had moved it aside")
    kept = [path for _, path in complete]
    if kept:
        notes.append(f"kept {', '.join(map(str, kept))} (complete build(s) that builds no longer running left) "
                     "until this build is in place")
    return notes, kept


def remove_superseded(kept: List[Path]) -> List[str]:
    """Remove the complete builds :func:`recover_leftovers` kept, now that a new build is in place; each is
    checked again first."""
    notes = []
    for path in kept:
        kind = "old" if ".old-" in path.name else "partial"
        if _leftover_state(path, kind)[0] != "complete":
            notes.append(f"left {path} alone: it changed since the build began")
            continue
        done = "removed" if _remove(path) else "could not remove all of"
        notes.append(f"{done} {path}, a complete build left by a build no longer running, now superseded")
    return notes
