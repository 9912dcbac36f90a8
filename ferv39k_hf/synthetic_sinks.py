"""Where the sample archive's files go: plain folders, or zips in drive export folders, as a drive download arrives."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Dict

from ferv39k_hf.taxonomy import PART_FOLDERS, SCENES

# Zips carry one fixed date so that their bytes depend on the content only.
ZIP_DATE_TIME = (2022, 3, 1, 9, 35, 12)
DRIVE_EXPORT = "drive-download-20220301T093512Z"
# How many zips each part's scenes are spread over, as a drive download does.
ZIP_PIECES: Dict[str, int] = {"faces": 3, "scenes": 2, "videos": 2}


class FolderSink:
    """Writes archive paths as plain files under root."""

    def __init__(self, root: Path):
        self.root = root
        self._made = set()

    def put(self, name: str, data: bytes) -> None:
        path = self.root / name
        if path.parent not in self._made:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._made.add(path.parent)
        path.write_bytes(data)

    def close(self) -> None:
        pass


class ZipSink:
    """Writes archive paths into zips inside drive export folders, as a drive download arrives.

    ``DRIVE_EXPORT-00k/<part folder>-00k.zip`` holds the k-th contiguous group of
    the part's scenes; ``DRIVE_EXPORT-001/4_setups.zip`` holds the split files.
    Members go in sorted order with a fixed date; JPEG and mp4 are stored,
    text is deflated.
    """

    def __init__(self, root: Path):
        self.root = root
        self._zips: Dict[Path, zipfile.ZipFile] = {}
        self._last: Dict[Path, str] = {}

    def zip_path(self, name: str) -> Path:
        folder = name.split("/", 1)[0]
        if folder == PART_FOLDERS["setups"]:
            return self.root / f"{DRIVE_EXPORT}-001" / f"{folder}.zip"
        kind = next(kind for kind, f in PART_FOLDERS.items() if f == folder)
        piece = SCENES.index(name.split("/")[1]) * ZIP_PIECES[kind] // len(SCENES) + 1
        return self.root / f"{DRIVE_EXPORT}-{piece:03d}" / f"{folder}-{piece:03d}.zip"

    def put(self, name: str, data: bytes) -> None:
        path = self.zip_path(name)
        archive = self._zips.get(path)
        if archive is None:
            path.parent.mkdir(parents=True, exist_ok=True)
            archive = self._zips[path] = zipfile.ZipFile(path, "w")
        if self._last.get(path, "") >= name:
            raise AssertionError(f"zip members out of order in {path}: {name} after {self._last[path]}")
        self._last[path] = name
        info = zipfile.ZipInfo(name, date_time=ZIP_DATE_TIME)
        info.external_attr = 0o644 << 16
        info.compress_type = zipfile.ZIP_DEFLATED if name.endswith(".csv") else zipfile.ZIP_STORED
        archive.writestr(info, data)

    def close(self) -> None:
        for archive in self._zips.values():
            archive.close()
