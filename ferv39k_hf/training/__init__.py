"""What a Trainer script imports: streamed loaders with equal epochs and lockstep evaluation of sharded models."""

from __future__ import annotations

import importlib
from typing import Any

# name -> module of this package that defines it; imported on first use (torch, transformers are heavy)
_LAZY = {
    "steps_per_epoch": "streamloader",
    "StreamCollator": "streamloader",
    "StreamLoader": "streamloader",
    "gather_across_ranks": "streamloader",
    "lockstep": "streamloader",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'ferv39k_hf.training' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)


def __dir__():
    return sorted(set(globals()) | set(__all__))
