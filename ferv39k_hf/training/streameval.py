"""Score a streamed split with a Trainer's model: every rank its own share, in lockstep, each clip gathered once."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import torch
import transformers

from ferv39k_hf.training.runfiles import mark_written
from ferv39k_hf.training.scoring import PREDICTIONS_FILE, ClipScorer, write_predictions
from ferv39k_hf.training.streamloader import StreamCollator, StreamLoader, gather_across_ranks, lockstep

__all__ = ["evaluate_stream", "filler_batch"]

_KEPT = ("clip_id", "scene")


def evaluate_stream(trainer: transformers.Trainer, eval_stream: Any, eval_transform: Any, scorer: ClipScorer,
                    expected_clips: int, split: str = "test") -> Dict[str, float]:
    """Score ``eval_stream`` (this rank's share of ``split``, :func:`~ferv39k_hf.dataset.streaming.stream`).

    Each rank runs ``trainer.model`` over its own share through ``trainer.prediction_step`` (views
    averaged by :class:`ClipViewTrainer`), in :func:`lockstep` so that a sharded model (FSDP,
    ZeRO-3) never waits on a rank that has run out; the clips are gathered on every rank, checked
    (each clip once, ``expected_clips`` in all: else RuntimeError naming the clip or the counts),
    scored by ``scorer`` and logged. Process 0 writes ``eval_predictions.csv`` (with the rank that
    scored each clip). Returns ``{"eval_loss", "eval_war", "eval_uar", ..., "eval_runtime", ...}``.
    """
    args, start = trainer.args, time.time()
    loader = StreamLoader(eval_stream, batch_size=args.per_device_eval_batch_size,
                          num_workers=args.dataloader_num_workers,
                          collate_fn=StreamCollator(eval_transform, keep=_KEPT))
    clips, losses = _run_share(trainer, loader, eval_transform)
    clips, losses = gather_across_ranks(clips), gather_across_ranks(losses)
    _check_clips(clips, expected_clips, split)
    clips.sort()
    scorer.scenes = [clip[1] for clip in clips]
    prediction = transformers.EvalPrediction(predictions=np.array([clip[3] for clip in clips]),
                                             label_ids=np.array([clip[2] for clip in clips]))
    scores = scorer(prediction)
    runtime = time.time() - start
    metrics = {"eval_loss": sum(loss for loss, _ in losses) / max(1, sum(n for _, n in losses)),
               **{f"eval_{key}": value for key, value in scores.items()},
               "eval_runtime": round(runtime, 4), "eval_samples_per_second": round(len(clips) / runtime, 3)}
    trainer.log(metrics)
    if trainer.is_world_process_zero():
        write_predictions(Path(args.output_dir, PREDICTIONS_FILE), [c[0] for c in clips], scorer.scenes,
                          prediction.label_ids, prediction.predictions, scorer.labels, ranks=[c[4] for c in clips])
        mark_written(args.output_dir, PREDICTIONS_FILE)
    return metrics


def _run_share(trainer, loader, eval_transform):
    """(clip_id, scene, label, log-probabilities, rank) of each clip of this rank's share, and (loss x rows, rows)."""
    # trainer.model is what Trainer's own evaluation runs: after training under FSDP the sharded wrapper, under
    # DeepSpeed the module with ZeRO-3's gathering hooks, under DDP the plain module (DDP's forward may broadcast
    # buffers). The first two all-gather parameters in every forward, and the ranks' shares may hold different
    # numbers of batches (even none), so lockstep keeps all ranks stepping until the last one is done; the
    # filler steps of a rank that ran out are run and discarded.
    model, rank = trainer.model, trainer.args.process_index
    model.eval()
    clips: List[tuple] = []
    losses: List[tuple] = []
    for batch, real in lockstep(loader, lambda: filler_batch(eval_transform)):
        inputs = {key: value for key, value in batch.items() if key not in _KEPT}  # batch unchanged
        rows = inputs["pixel_values"].shape[0]
        loss, logprobs, labels = trainer.prediction_step(model, inputs, prediction_loss_only=False)
        if not real:
            continue
        losses.append((float(loss) * rows, rows))
        for clip in zip(batch["clip_id"], batch["scene"], labels.tolist(), logprobs.float().cpu().tolist()):
            clips.append((*clip, rank))
    return clips, losses


def _check_clips(clips: List[tuple], expected: int, split: str) -> None:
    ranks_of: Dict[str, List[int]] = {}
    for clip in clips:
        ranks_of.setdefault(clip[0], []).append(clip[4])
    for clip_id, ranks in ranks_of.items():
        if len(ranks) > 1:
            raise RuntimeError(f"clip {clip_id} of {split} was scored {len(ranks)} times (ranks {ranks})")
    if len(clips) != expected:
        raise RuntimeError(f"the {split} split has {expected} clips by its card, but the ranks "
                           f"scored {len(clips)}: the stream lost clips")


def filler_batch(transform: Any) -> Dict[str, Any]:
    """One clip of zeros shaped as ``transform``'s streamed batches (one view), for the steps of a rank whose
    share has run out (:func:`~ferv39k_hf.training.lockstep`); its outputs are never recorded."""
    frames, size = transform.num_frames, transform.size
    batch: Dict[str, Any] = {"labels": torch.zeros(1, dtype=torch.int64), "clip_id": ["<filler>"], "scene": [-1]}
    if transform.on_device:  # uint8 frames, the whole frame as the crop, no flip (see DeviceFinish)
        batch.update(pixel_values=torch.zeros((1, frames, size, size, 3), dtype=torch.uint8),
                     crop_boxes=torch.tensor([[0, 0, size, size]]), flips=torch.zeros(1, dtype=torch.bool))
    else:
        batch["pixel_values"] = torch.zeros((1, frames, 3, size, size))
    return batch
