"""What a DFEW or MAFW build must hold, computed from the archive's own files, independently of the package."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, List, Set, Tuple

import datasets

import ferv39k_hf

# datasets < 4 names a list feature Sequence
_FRAMES_UNDECODED = getattr(datasets, "List", datasets.Sequence)(datasets.Image(decode=False))

DFEW_WORDS = ["Happy", "Sad", "Neutral", "Angry", "Surprise", "Disgust", "Fear"]  # official numbers 1..7


def natural(name: str) -> list:
    return [int(c) if c.isdigit() else c for c in re.split(r"(\d+)", name)]


def dfew_folds(root: Path) -> Dict[int, Dict[str, Dict[str, str]]]:
    """fold -> split -> clip id -> class word, read from every set_K.csv under root."""
    folds: Dict[int, Dict[str, Dict[str, str]]] = {}
    for path in root.rglob("set_*.csv"):
        split = "train" if path.parent.name.lower().startswith("train") else "test"
        k = int(path.stem.split("_")[1])
        rows = [line.split(",") for line in path.read_bytes().decode().splitlines()[1:] if line.strip()]
        folds.setdefault(k, {})[split] = {f"{int(n):05d}": DFEW_WORDS[int(lab) - 1] for n, lab in rows}
    return folds


def mafw_folds(root: Path, labelset: str = "single") -> Dict[int, Dict[str, Dict[str, str]]]:
    """fold -> split -> clip id -> label text (compound: words joined by _), from <labelset>/no_caption lists."""
    folds: Dict[int, Dict[str, Dict[str, str]]] = {}
    for path in root.rglob("*.txt"):
        if path.parent.parent.parent.name != labelset:
            continue
        k = int(path.parent.name.split("_")[1])
        rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
        folds.setdefault(k, {})[path.stem] = {name.split(".")[0]: label for name, label in rows}
    return folds


def frame_files(folder: Path, clip_id: str) -> List[bytes]:
    """A clip folder's image files' bytes in natural name order."""
    clip = folder / clip_id
    names = sorted((p.name for p in clip.iterdir() if p.suffix.lower() in (".jpg", ".png")), key=natural)
    return [(clip / n).read_bytes() for n in names]


def check_every_fold(ds: datasets.DatasetDict, expected: Dict[int, Dict[str, Dict[str, str]]], frames: Path,
                     label_column: str = "label") -> Set[str]:
    """For every fold: exactly the lists' clips in train and test, each with its class; frames byte-identical."""
    assert sorted(expected) == [1, 2, 3, 4, 5]
    seen: Set[str] = set()
    for k in range(1, 6):
        split = ferv39k_hf.fold(ds, k)
        for name in ("train", "test"):
            part = split[name].cast_column("frames", _FRAMES_UNDECODED)
            rows = part.to_list()
            got = {r["clip_id"]: _label(part, r, label_column) for r in rows}
            assert got == expected[k][name], (k, name)
            for row in rows:
                if row["clip_id"] not in seen:
                    seen.add(row["clip_id"])
                    want = frame_files(frames, row["clip_id"])
                    assert [f["bytes"] for f in row["frames"]] == want, row["clip_id"]
                    assert row["num_frames"] == len(want)
    return seen


def _label(ds: datasets.Dataset, row: dict, column: str) -> str:
    feature = ds.features[column]
    if column == "labels":
        return "_".join(feature.feature.int2str(i) for i in row[column])
    return feature.int2str(row[column])


def natural_differs(folder: Path) -> Tuple[int, int]:
    """(clips whose natural frame order differs from text order, clips shorter than 16 frames)."""
    clips = [c for c in folder.iterdir() if c.is_dir()]
    differs = sum(sorted(p.name for p in c.iterdir()) != sorted((p.name for p in c.iterdir()), key=natural)
                  for c in clips)
    return differs, sum(len(list(c.iterdir())) < 16 for c in clips)
