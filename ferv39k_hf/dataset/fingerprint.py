"""Cache keys: the archive's content identity and the version of the code that turns it into rows.

datasets serves a prepared cache whenever its key matches, so the key must
change whenever the rows could: the builder's config carries
:func:`archive_fingerprint` and :data:`BUILDER_VERSION` (``ferv39k_hf.load``
and the datasets < 4 loading script), and the Parquet export seeds its shard
digests with :data:`BUILDER_VERSION` (its digests hash the rows themselves).
No frame is read: files are known by their size and times, zip members by
their size and CRC-32 from the central directory.
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
from typing import Any, Optional

import xxhash

from ferv39k_hf import __version__
from ferv39k_hf.archive.layout import Layout

# The modules whose code decides what a row holds. Hashing their source means
# an upgrade (or a local edit) that could change rows is never served an old
# cache, without anyone having to remember to bump a number.
ROW_MODULES = (
    "archive.annotations",
    "archive.clipfiles",
    "archive.dfer_folds",
    "archive.dfer_layout",
    "archive.files",
    "archive.layout",
    "archive.lists",
    "archive.splits",
    "archive.ziparchive",
    "archive.zipdir",
    "archive.zipindex",
    "clips.video",
    "dataset.builder",
    "dataset.dfer_build",
    "dataset.dfer_load",
    "dataset.dfer_rows",
    "dataset.export",
    "dataset.shardwriter",
    "dfer_taxonomy",
    "taxonomy",
)


def _source_digest(modules: tuple = ROW_MODULES) -> str:
    digest = hashlib.sha256()
    for name in modules:
        spec = importlib.util.find_spec(f"ferv39k_hf.{name}")
        if spec is None or spec.origin is None or not hasattr(spec.loader, "get_data"):
            raise ImportError(f"ferv39k_hf.{name}: module not found, so the builder version cannot be computed")
        # The loader reads the .py file, the .pyc of a sourceless install, or a member of a zipped one.
        digest.update(name.encode() + b"\0" + spec.loader.get_data(spec.origin) + b"\0")
    return digest.hexdigest()[:12]


def _release(version: str) -> str:
    """The x.y.z that ``datasets.Version`` accepts, from a version such as 0.2.0.dev1 or 1.0."""
    numbers = re.findall(r"\d+", version.split("+")[0])[:3]
    return ".".join((numbers + ["0", "0", "0"])[:3])


# "0.1.0+<source hash>": changes with the release and with any edit of a row module.
BUILDER_VERSION = f"{__version__}+{_source_digest()}"
RELEASE = _release(__version__)  # what datasets.Version gets: it takes x.y.z only


def archive_fingerprint(layout: Layout, kind: str, lists: Optional[Any] = None) -> str:
    """A hash of what a build of part ``kind`` reads: the split files' text, the part's clip ids,
    and each clip file's identity (see :meth:`~ferv39k_hf.archive.files.FileRef.identity`); with ``lists``
    (a :class:`~ferv39k_hf.archive.lists.SplitLists`) also each list's format and content hash.

    Files are listed by the part's own listing (:meth:`~ferv39k_hf.archive.parts.Part.clip_files`),
    so the fingerprint covers exactly the files a build reads, duplicates resolved the same way.
    """
    digest = xxhash.xxh3_128()
    for split in sorted(layout.split_files):
        digest.update(f"split {split}\0{layout.read_split(split)}\0".encode("utf-8"))
    if lists is not None:
        digest.update(f"lists\0{lists.identity()}\0".encode("utf-8"))
    part = layout.part(kind)
    for clip_id in part.clip_ids():
        # One update per clip: Python's per-call cost, not hashing, dominates at a million frames.
        files = [f"{ref.name.rpartition('/')[2]}{ref.identity()}" for ref in part.clip_files(clip_id)]
        digest.update(f"{kind}:{clip_id}\0{'|'.join(files)}\n".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()[:32]
