"""Runs that say what they do: a summary when training starts, and the loss logged a few dozen times a run."""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any, Dict, Mapping, Optional, Sequence

from transformers import TrainerCallback, TrainingArguments

logger = logging.getLogger(__name__)

__all__ = ["RunSummary", "TRANSFORMERS_LOGGING_STEPS", "clip_counts"]

# TrainingArguments' own default: a run that still has it gets an interval of its length instead
TRANSFORMERS_LOGGING_STEPS = next(f.default for f in dataclasses.fields(TrainingArguments) if f.name == "logging_steps")


class RunSummary(TrainerCallback):
    """Trainer callback: logs what a run does once, when training starts (process 0), and paces the loss log.

    The summary names the clips per split, the label order, the clip protocol (sampling, frames,
    size, test views), the model and its parameter count, the effective batch size (per device x
    devices x accumulation) and the optimizer steps. With ``logs_per_run`` (default 30) and
    ``--logging_steps`` left at transformers' default (500), the loss is logged every
    ``ceil(steps / logs_per_run)`` steps instead, so a run of any length logs it about that many times.

    Example::

        summary = RunSummary(clips={"train": len(train), "test": len(test)}, labels=labels,
                             protocol=model.config.ferv39k, model_name="MCG-NJU/videomae-base")
        trainer = ClipViewTrainer(..., callbacks=[summary])
        summary.log(trainer)  # for a run that only evaluates: the summary without steps
    """

    def __init__(self, *, clips: Mapping[str, Optional[int]], labels: Sequence[str], protocol: Mapping[str, Any],
                 model_name: Optional[str], logs_per_run: Optional[int] = 30):
        self.clips, self.labels, self.protocol = dict(clips), list(labels), dict(protocol)
        self.model_name, self.logs_per_run = model_name, logs_per_run
        self.model: Any = None

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        """Set the loss log's interval (when left at transformers' default) and log the summary on process 0."""
        if self.logs_per_run and args.logging_steps == TRANSFORMERS_LOGGING_STEPS and state.max_steps > 0:
            state.logging_steps = max(1, math.ceil(state.max_steps / self.logs_per_run))
        if state.is_world_process_zero:
            logger.info("%s", self.text(args, model, state.max_steps, state.logging_steps))

    def log(self, trainer: Any) -> None:
        """Log the summary without the training lines (a run that only evaluates), on process 0."""
        if trainer.is_world_process_zero():
            logger.info("%s", self.text(trainer.args, trainer.model, None, None))

    def text(self, args: TrainingArguments, model: Any, max_steps: Optional[int],
             logging_steps: Optional[int]) -> str:
        """The summary as lines of text."""
        p = self.protocol
        clips = ", ".join(f"{split} {count:,}" if isinstance(count, int) else f"{split} (streamed)"
                          for split, count in self.clips.items())
        lines = [
            f"clips: {clips}",
            f"labels ({p.get('label_order', '?')} order): {', '.join(f'{i} {w}' for i, w in enumerate(self.labels))}",
            f"clip protocol: {p.get('sampling')} sampling of {p.get('num_frames')} frames at {p.get('image_size')} "
            f"pixels, {p.get('test_views')} test views, {p.get('dataset_config')} frames",
            f"model: {self.model_name or 'from scratch'} ({_parameters(model)})",
        ]
        if max_steps is not None:
            batch = args.per_device_train_batch_size * max(1, args.world_size) * args.gradient_accumulation_steps
            lines += [f"effective batch: {batch} clips ({args.per_device_train_batch_size} per device x "
                      f"{args.world_size} device(s) x {args.gradient_accumulation_steps} accumulation)",
                      f"optimizer steps: {max_steps:,}; loss logged every {logging_steps} step(s)"]
        return "run summary\n  " + "\n  ".join(lines)


def _parameters(model: Any) -> str:
    if model is None:
        return "parameters unknown"
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return f"{total:,} parameters" + ("" if trainable == total else f", {trainable:,} trainable")


def clip_counts(splits: Mapping[str, Any]) -> Dict[str, Optional[int]]:
    """Rows per split where the split has a length; None for a stream (whose count comes from its card)."""
    counts: Dict[str, Optional[int]] = {}
    for name, split in splits.items():
        try:
            counts[name] = len(split)
        except TypeError:
            counts[name] = None
    return counts
