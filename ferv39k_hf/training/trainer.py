"""ClipViewTrainer: multi-view evaluation, streamed epochs with exact resume, predictions; and its collator."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
import transformers
from transformers import Trainer, TrainerCallback

from ferv39k_hf.clips.collate import collate_clips
from ferv39k_hf.metrics import average_views, clip_labels
from ferv39k_hf.training.runfiles import mark_written, set_aside_earlier_run
from ferv39k_hf.training.scoring import PREDICTIONS_FILE, ClipScorer, write_predictions
from ferv39k_hf.training.streamloader import StreamLoader

logger = logging.getLogger(__name__)

__all__ = ["ClipCollator", "ClipViewTrainer", "STREAM_SETTINGS", "check_one_world"]

STREAM_SETTINGS = "ferv39k_stream.json"  # in each checkpoint of a streamed run


class ClipCollator:
    """Trainer ``data_collator``: stacks transformed training rows; runs ``eval_transform`` (and its views) on raw rows.

    Training rows arrive transformed (``train.with_transform(VideoClipTransform(train=True))``),
    evaluation rows raw, so that the evaluation transform sees a whole batch and can emit several
    views per clip with the ``view_clip_index`` that :class:`ClipViewTrainer` averages over.
    """

    def __init__(self, eval_transform: Any):
        self.eval_transform = eval_transform

    def __call__(self, rows: List[Dict[str, Any]]) -> Dict[str, torch.Tensor]:
        """One batch: ``collate_clips`` for transformed rows, else the evaluation transform on the rows' columns."""
        if "pixel_values" in rows[0]:
            return collate_clips(rows)
        return self.eval_transform({key: [r[key] for r in rows] for key in rows[0]})


def check_one_world(args: transformers.TrainingArguments) -> None:
    """Refuse processes launched together (``WORLD_SIZE`` > 1) that each run alone: independent copies of one run.

    transformers does this on CPUs without ``ddp_backend="gloo"``: every process trains, evaluates and
    writes the same output folder as a world of one.
    """
    launched = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if launched > 1 and args.world_size == 1:
        raise ValueError(f"{launched} processes were launched (WORLD_SIZE={launched}) but each runs alone, as "
                         f"independent copies of one run: on CPUs pass --ddp_backend gloo")


class _RecordStreamSettings(TrainerCallback):
    """Writes the trainer's stream settings into each checkpoint it saves (process 0)."""

    def __init__(self, trainer: "ClipViewTrainer"):
        self.trainer = trainer

    def on_save(self, args, state, control, **kwargs):
        folder = Path(args.output_dir, f"{transformers.trainer_utils.PREFIX_CHECKPOINT_DIR}-{state.global_step}")
        if state.is_world_process_zero and folder.is_dir():
            settings = json.dumps(self.trainer.current_stream_settings(), indent=2, sort_keys=True)
            (folder / STREAM_SETTINGS).write_text(settings + "\n", encoding="utf-8")


class ClipViewTrainer(Trainer):
    """Trainer whose evaluation averages the softmax of a clip's views before anything is gathered.

    Averaging inside the step keeps one prediction per clip, so distributed evaluation gathers and
    trims clips, not views. With a :class:`ClipScorer` as ``compute_metrics`` and an evaluation set
    with a ``clip_id`` column, every :meth:`evaluate` writes the clips' predictions to
    ``<output_dir>/eval_predictions.csv`` (process 0), the file ``ferv39k-hf score`` reads.

    A streamed training split (:func:`ferv39k_hf.dataset.streaming.stream`) is already this rank's
    share, so its DataLoader (a :class:`StreamLoader`) is not sharded again by accelerate; with
    ``stream_steps_per_epoch`` every epoch of it is that many optimizer steps on every rank, and a
    resumed run starts the stream at the epoch and batch the checkpoint stopped at. Each checkpoint
    records the settings that decide which batches the stream gives (``STREAM_SETTINGS``); a resume
    under other settings says which differ. A streamed test split is scored by
    :func:`ferv39k_hf.training.evaluate_stream`.

    Processes launched together that would each run alone (CPUs without ``ddp_backend="gloo"``) are
    refused at construction (:func:`check_one_world`). Constructing one starts a run in ``output_dir``:
    the files an earlier run of this package wrote there (its scores, predictions, card) are moved
    aside first (:func:`~ferv39k_hf.training.set_aside_earlier_run`).
    """

    def __init__(self, *args, stream_steps_per_epoch: Optional[int] = None,
                 stream_settings: Optional[Dict[str, Any]] = None, **kwargs):
        super().__init__(*args, **kwargs)
        check_one_world(self.args)
        if self.is_world_process_zero():
            set_aside_earlier_run(self.args.output_dir)
        self.stream_steps_per_epoch = stream_steps_per_epoch
        self._stream_resume: Optional[tuple] = None
        self.stream_settings = stream_settings or {}
        if stream_steps_per_epoch:
            self.add_callback(_RecordStreamSettings(self))

    def current_stream_settings(self) -> Dict[str, Any]:
        """What decides the streamed batches of a step: these, and the data itself."""
        args = self.args
        return {"seed": args.seed, "world_size": args.world_size,
                "per_device_train_batch_size": args.per_device_train_batch_size,
                "gradient_accumulation_steps": args.gradient_accumulation_steps,
                "dataloader_num_workers": args.dataloader_num_workers,
                "steps_per_epoch": self.stream_steps_per_epoch, **self.stream_settings}

    def _check_stream_settings(self, checkpoint: str) -> None:
        recorded_file = Path(checkpoint, STREAM_SETTINGS)
        if not recorded_file.is_file():
            logger.warning("%s is missing: nothing says this checkpoint streamed with today's settings; the "
                           "resumed epoch's batches are the stopped run's only if they are the same", recorded_file)
            return
        recorded, now = json.loads(recorded_file.read_text(encoding="utf-8")), self.current_stream_settings()
        changed = [f"{key} {recorded.get(key)!r} -> {now.get(key)!r}" for key in sorted(set(recorded) | set(now))
                   if recorded.get(key) != now.get(key)]
        if changed:
            logger.warning("resuming with stream settings other than the checkpoint's (%s): %s. The rest of the "
                           "epoch is read in another order, so some of its clips are trained on twice and others "
                           "not at all in this epoch; resume with the checkpoint's settings to avoid it",
                           recorded_file, "; ".join(changed))

    def get_train_dataloader(self):
        """A :class:`StreamLoader` over a streamed training split (equal epochs, exact resume); else Trainer's."""
        if not isinstance(self.train_dataset, torch.utils.data.IterableDataset):
            return super().get_train_dataloader()
        args = self.args
        per_epoch = self.stream_steps_per_epoch
        loader = StreamLoader(
            self.train_dataset, batch_size=getattr(self, "_train_batch_size", args.train_batch_size),
            batches_per_epoch=per_epoch * args.gradient_accumulation_steps if per_epoch else None,
            collate_fn=self.data_collator, num_workers=args.dataloader_num_workers,
            pin_memory=args.dataloader_pin_memory, prefetch_factor=args.dataloader_prefetch_factor)
        if self._stream_resume:
            loader.resume_at(*self._stream_resume)
        return loader

    def train(self, resume_from_checkpoint=None, **kwargs):
        """Trainer.train; resuming a streamed run, the stream itself skips what the checkpoint trained on.

        Trainer's own skipping (accelerate's ``skip_first_batches``) rebuilds the DataLoader as a plain
        one: the stream then lost its epoch (every resumed epoch read epoch 0's order) and its length.
        """
        self._stream_resume = None
        skipping = self.args.ignore_data_skip
        if (resume_from_checkpoint and self.stream_steps_per_epoch and not skipping
                and isinstance(self.train_dataset, torch.utils.data.IterableDataset)):
            checkpoint = resume_from_checkpoint
            if isinstance(checkpoint, bool):
                checkpoint = transformers.trainer_utils.get_last_checkpoint(self.args.output_dir)
            state_file = Path(checkpoint or "", "trainer_state.json")
            if checkpoint and state_file.is_file():
                global_step = transformers.TrainerState.load_from_json(str(state_file)).global_step
                epoch, steps = divmod(global_step, self.stream_steps_per_epoch)
                self._stream_resume = (epoch, steps * self.args.gradient_accumulation_steps)
                self.args.ignore_data_skip = True  # the stream skips, not Trainer
                logger.info("resuming the stream at epoch %d after %d of its %d steps (global step %d, %s)",
                            epoch, steps, self.stream_steps_per_epoch, global_step, state_file)
                self._check_stream_settings(checkpoint)
        try:
            return super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)
        finally:
            self.args.ignore_data_skip = skipping  # the caller's arguments as they were

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """Trainer's step, then the softmax of each clip's views averaged: one row of log-probabilities per clip."""
        view_clip_index = inputs.pop("view_clip_index", None)
        loss, logits, labels = super().prediction_step(model, inputs, prediction_loss_only, ignore_keys)
        if view_clip_index is None or logits is None:
            return loss, logits, labels
        clip_index = view_clip_index.tolist()
        _, probs = average_views(clip_index, logits.float().cpu())
        if labels is not None:
            labels = torch.from_numpy(clip_labels(clip_index, labels.cpu())[1]).to(labels.device)
        return loss, torch.from_numpy(probs).log().to(logits.device), labels

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval"):
        """Trainer.evaluate; then, on process 0, ``<prefix>_predictions.csv`` of the clips it scored."""
        metrics = super().evaluate(eval_dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix)
        dataset = self.eval_dataset if eval_dataset is None else eval_dataset
        if isinstance(dataset, dict):  # Trainer evaluates each; their scores are not kept apart here
            return metrics
        scorer = self.compute_metrics
        if self.is_world_process_zero() and isinstance(scorer, ClipScorer) and scorer.last_predictions is not None:
            self._write_map_predictions(dataset, scorer, metric_key_prefix)
        return metrics

    def _write_map_predictions(self, dataset, scorer: ClipScorer, prefix: str) -> None:
        columns = _plain_columns(dataset, ("clip_id", "label"))
        path = Path(self.args.output_dir, PREDICTIONS_FILE.replace("eval", prefix, 1))
        if columns is None:
            logger.info("no %s written: the evaluation set has no clip_id column", path.name)
            return
        references = scorer.last_references
        if len(columns["label"]) != len(references) or list(columns["label"]) != references.tolist():
            raise RuntimeError(f"{path}: not written: the Trainer's {len(references)} scored clips do not come in "
                               f"the order of the evaluation set's {len(columns['label'])} rows")
        scenes = _plain_columns(dataset, ("scene",)) or {"scene": [None] * len(references)}  # DFEW/MAFW: none
        write_predictions(path, columns["clip_id"], scenes["scene"], references, scorer.last_predictions,
                          scorer.labels)
        mark_written(self.args.output_dir, path.name)


def _plain_columns(dataset, names) -> Optional[Dict[str, list]]:
    """``names`` of a datasets.Dataset as lists, read past any transform; None where it lacks one of them."""
    features = getattr(dataset, "column_names", None) or []
    if not all(name in features for name in names):
        return None
    plain = dataset.with_format(None) if hasattr(dataset, "with_format") else dataset
    return {name: list(plain[name]) for name in names}
