"""What a Trainer script imports: the Trainer subclass, collators, compute_metrics, checkpoint protocol, run files.

    from ferv39k_hf.training import ClipCollator, ClipScorer, ClipViewTrainer, build_model

:class:`ClipViewTrainer` evaluates several views per clip, writes each evaluation's per-clip
predictions (``eval_predictions.csv``, what ``ferv39k-hf score`` reads), trains from streamed
splits with equal epochs on every rank and exact resume, and moves an earlier run's results
aside; :class:`ClipCollator` / :class:`StreamCollator` batch clips; :class:`ClipScorer` is the
WAR/UAR ``compute_metrics``; :func:`build_model`, :func:`clip_protocol`,
:func:`checkpoint_image_processor`, :func:`write_checkpoint_files` and :func:`push_checkpoint`
make a checkpoint that states its labels and clip protocol (docs/model-cards.md);
:class:`RunSummary` and :func:`plot_training` say what a run does. docs/training.md shows a
script built from them. Names are imported on first use (torch and transformers are heavy).
"""

from __future__ import annotations

import importlib
from typing import Any

# name -> module of this package that defines it
_LAZY = {
    "ClipViewTrainer": "trainer",
    "ClipCollator": "trainer",
    "STREAM_SETTINGS": "trainer",
    "check_one_world": "trainer",
    "ClipScorer": "scoring",
    "PREDICTIONS_FILE": "scoring",
    "write_predictions": "scoring",
    "evaluate_stream": "streameval",
    "filler_batch": "streameval",
    "build_model": "checkpoint",
    "processor_settings": "checkpoint",
    "clip_protocol": "checkpoint",
    "checkpoint_image_processor": "checkpoint",
    "write_checkpoint_files": "checkpoint",
    "push_checkpoint": "checkpoint",
    "IMAGENET_DEFAULT_MEAN": "checkpoint",
    "IMAGENET_DEFAULT_STD": "checkpoint",
    "RunSummary": "runlog",
    "clip_counts": "runlog",
    "RUN_RECORD": "runfiles",
    "set_aside_earlier_run": "runfiles",
    "mark_written": "runfiles",
    "save_evaluation": "runfiles",
    "plot_training": "runfiles",
    "SAMPLINGS": "data",
    "ClipData": "data",
    "load_clips": "data",
    "load_streams": "data",
    "streamed_max_steps": "data",
    "parse_test_views": "data",
    "preset_size": "data",
    "subset": "data",
    "check_output_dir": "data",
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
