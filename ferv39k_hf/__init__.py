"""FERV39k for the Hugging Face ecosystem.

``ferv39k_hf.load(root)`` reads a hand-downloaded archive through the package's
datasets builder; ``ferv39k-hf build`` writes a Parquet folder that
``datasets.load_dataset`` reads. Torch, transformers and PyAV are imported
only by the parts that need them.
"""

from __future__ import annotations

import importlib
from typing import Any

from ferv39k_hf.taxonomy import CLASS_WORDS, DFEW_ORDER, SCENARIOS, SCENE_TO_SCENARIO, SCENES, label_names

__version__ = "0.1.0"

# name -> module that defines it; resolved on first use so that importing the
# package stays light.
_LAZY = {
    "Ferv39k": "dataset.builder",
    "Ferv39kConfig": "dataset.builder",
    "load": "dataset.builder",
    "fold": "dataset.dfer_rows",
    "find_layout": "archive.layout",
    "ClipRecord": "archive.annotations",
    "VideoClipTransform": "clips.transforms",
    "DeviceFinish": "clips.device",
    "undecoded_frames": "clips.columns",
    "collate_clips": "clips.collate",
    "fused_kernel_available": "clips.geometry",
    "metrics": None,
}

__all__ = ["CLASS_WORDS", "DFEW_ORDER", "SCENARIOS", "SCENES", "SCENE_TO_SCENARIO", "label_names", *_LAZY]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'ferv39k_hf' has no attribute {name!r}")
    module = _LAZY[name]
    if module is None:
        return importlib.import_module(f".{name}", __name__)
    return getattr(importlib.import_module(f".{module}", __name__), name)
