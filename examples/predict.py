#!/usr/bin/env python
"""Top facial expressions of a clip from a checkpoint trained by run_video_classification.py.

    python examples/predict.py CHECKPOINT clip_frames_folder/ clip.mp4 --top_k 3
    python examples/predict.py CHECKPOINT --batch clips/ --output predictions.csv
    python examples/predict.py CHECKPOINT --dataset ferv39k --split test --output predictions.csv

A clip is a folder of frames (*.jpg, *.jpeg, *.png, natural-sorted) or a video file
(decoded with PyAV). ``--batch`` walks a folder and scores every clip under it (each
folder that holds frames, each video); ``--dataset`` scores every clip of a split of a
folder made by ``ferv39k-hf build`` (streamed: no archive and no datasets cache needed).
Both write one CSV row per clip (``clip`` or ``clip_id``, the top expression as
``prediction``, its ``probability`` and every class's ``p_<class>``), the file
``ferv39k-hf score`` reads, with a progress bar. Frames are sampled and normalised the way the checkpoint was
trained (``config.ferv39k``, the image processor config); test views are
softmax-averaged per clip.
"""

import argparse
import csv
import sys
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from transformers import AutoConfig, AutoModelForVideoClassification
from transformers.image_processing_utils import ImageProcessingMixin

from ferv39k_hf import VideoClipTransform
from ferv39k_hf.archive.layout import natural_key
from ferv39k_hf.archive.outdirs import OutputRefused, check_outside_archive
from ferv39k_hf.errors import Ferv39kError
from ferv39k_hf.metrics import average_views

FRAME_SUFFIXES = {".jpg", ".jpeg", ".png"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm"}


class ClipPredictor:
    """A checkpoint plus the clip pipeline it was trained with."""

    def __init__(self, checkpoint: str, *, num_frames: Optional[int] = None, image_size: Optional[int] = None,
                 sampling: Optional[str] = None, test_views: Optional[str] = None, device: Optional[str] = None):
        config = AutoConfig.from_pretrained(checkpoint)
        protocol = getattr(config, "ferv39k", None) or {}
        processor = _processor_config(checkpoint)
        temporal, spatial = (int(v) for v in (test_views or protocol.get("test_views", "1x1")).lower().split("x"))
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = AutoModelForVideoClassification.from_pretrained(checkpoint).to(self.device).eval()
        self.labels = [config.id2label[i] for i in range(config.num_labels)]
        self.transform = VideoClipTransform(
            num_frames=num_frames or protocol.get("num_frames") or config.num_frames,
            size=image_size or protocol.get("image_size") or processor.get("size") or config.image_size,
            train=False,
            sampling=sampling or protocol.get("sampling", "segment"),
            mean=protocol.get("mean") or processor.get("mean") or (0.485, 0.456, 0.406),
            std=protocol.get("std") or processor.get("std") or (0.229, 0.224, 0.225),
            stride=protocol.get("window_stride", 1),
            temporal_views=temporal,
            spatial_views=spatial,
        )

    def probabilities(self, clips: Sequence[Path]) -> np.ndarray:
        """(len(clips), classes) view-averaged probabilities."""
        return self.batch_probabilities(_clip_batch(clips))

    @torch.no_grad()
    def batch_probabilities(self, batch: Dict[str, list]) -> np.ndarray:
        """(clips, classes) view-averaged probabilities of a batch of columns (``frames`` or ``video`` rows)."""
        inputs = self.transform(batch)
        pixel_values = inputs["pixel_values"].to(self.device)
        logits = self.model(pixel_values=pixel_values).logits.float().cpu()
        views = self.transform.temporal_views * self.transform.spatial_views
        clip_index = np.repeat(np.arange(len(batch["clip_id"])), views)
        _, probs = average_views(clip_index.tolist(), logits)
        return probs

    def top(self, probs: np.ndarray, k: int) -> List[Tuple[str, float]]:
        order = np.argsort(-probs)[:k]
        return [(self.labels[i], float(probs[i])) for i in order]


def _processor_config(checkpoint: str) -> Dict:
    try:
        config, _ = ImageProcessingMixin.get_image_processor_dict(checkpoint)
    except OSError:
        return {}
    crop, size = config.get("crop_size") or {}, config.get("size") or {}
    return {"mean": config.get("image_mean"), "std": config.get("image_std"),
            "size": crop.get("height") or size.get("shortest_edge") or size.get("height")}


def frame_files(folder: Path) -> List[Path]:
    return sorted((p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in FRAME_SUFFIXES),
                  key=lambda p: natural_key(p.name))


def _clip_batch(clips: Sequence[Path]) -> Dict[str, list]:
    """Clips as transform input: ``frames`` rows ({bytes, path} per frame) or ``video`` rows, not mixed."""
    kinds = {clip.is_dir() for clip in clips}
    if len(kinds) != 1:
        raise ValueError("a batch must hold only frame folders or only videos")
    if kinds == {True}:
        rows = []
        for clip in clips:
            files = frame_files(clip)
            if not files:
                raise ValueError(f"{clip}: no frames (*.jpg, *.jpeg, *.png) in this folder")
            rows.append([{"bytes": f.read_bytes(), "path": str(f)} for f in files])
        return {"clip_id": [str(c) for c in clips], "frames": rows}
    return {"clip_id": [str(c) for c in clips], "video": [{"bytes": None, "path": str(c)} for c in clips],
            "num_frames": [None] * len(clips)}


def find_clips(root: Path) -> List[Path]:
    """Every folder under ``root`` (itself included) that holds frames, and every video file."""
    found = []
    for path in sorted([root, *root.rglob("*")], key=lambda p: [natural_key(part) for part in p.parts]):
        if path.is_dir() and frame_files(path):
            found.append(path)
        elif path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES:
            found.append(path)
    return found


def _chunks(clips: List[Path], size: int) -> Iterator[List[Path]]:
    # keep frame folders and videos in separate batches: they take different decoders
    for is_dir in (True, False):
        group = [c for c in clips if c.is_dir() == is_dir]
        for start in range(0, len(group), size):
            yield group[start : start + size]


def _progress(total: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="clip", disable=None)  # None: off when not a terminal


class _CsvWriter:
    """The predictions file ``ferv39k-hf score`` reads: clip_id, prediction, probability, p_<class>."""

    def __init__(self, handle, labels: List[str], id_column: str = "clip_id"):
        self.writer, self.labels = csv.writer(handle), labels
        self.writer.writerow([id_column, "prediction", "probability", *(f"p_{label}" for label in labels)])

    def rows(self, names: Sequence[str], probs: np.ndarray) -> None:
        for name, row in zip(names, probs):
            top = int(np.argmax(row))
            self.writer.writerow([name, self.labels[top], f"{row[top]:.6f}", *(f"{x:.6f}" for x in row)])


def write_csv(predictor: ClipPredictor, clips: List[Path], root: Path, output: Path, batch_size: int) -> int:
    output.parent.mkdir(parents=True, exist_ok=True)
    with output.open("w", newline="", encoding="utf-8") as handle, _progress(len(clips), "predict") as bar:
        writer = _CsvWriter(handle, predictor.labels, id_column="clip")  # a path under --batch, or a clip id
        for chunk in _chunks(clips, batch_size):
            names = [clip.relative_to(root).as_posix() if clip != root else clip.name for clip in chunk]
            writer.rows(names, predictor.probabilities(chunk))
            bar.update(len(chunk))
    return len(clips)


def read_split_card(dataset: str, split: str) -> dict:
    """The card of a built folder that has ``split``; a Ferv39kError naming the folder otherwise."""
    from ferv39k_hf.dataset.streaming import StreamError, read_card, split_files

    card = read_card(dataset)
    splits = split_files(card, dataset, f"{dataset}/README.md")
    if split not in splits:
        raise StreamError(f"{dataset}: no split {split!r}; the build has {', '.join(sorted(splits))}")
    return card


def write_split_csv(predictor: ClipPredictor, dataset: str, split: str, output: Path, batch_size: int,
                    card: Optional[dict] = None) -> int:
    """Predict every clip of ``split`` of a built folder, read in file order; returns the clip count."""
    from ferv39k_hf.dataset.streaming import card_row_counts, stream

    card = read_split_card(dataset, split) if card is None else card
    rows = stream(dataset, split, card=card, rank=0, world_size=1)
    total = card_row_counts(card).get(split)
    column = "video" if "video" in (rows.features or {}) else "frames"
    output.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with output.open("w", newline="", encoding="utf-8") as handle, _progress(total, f"predict {split}") as bar:
        writer = _CsvWriter(handle, predictor.labels)
        batch: List[dict] = []
        for row in [*rows, None]:  # None: the end, flush the last batch
            if row is not None:
                batch.append(row)
            if batch and (row is None or len(batch) == batch_size):
                columns = {"clip_id": [r["clip_id"] for r in batch], column: [r[column] for r in batch],
                           "num_frames": [r.get("num_frames") for r in batch]}
                writer.rows(columns["clip_id"], predictor.batch_probabilities(columns))
                count += len(batch)
                bar.update(len(batch))
                batch = []
    return count


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="a folder saved by run_video_classification.py (or a Hub id)")
    parser.add_argument("clips", nargs="*", type=Path, help="frame folders or video files to classify")
    parser.add_argument("--batch", type=Path, help="score every clip under this folder and write a CSV")
    parser.add_argument("--dataset", help="score every clip of --split of a folder made by 'ferv39k-hf build' "
                                          "(a local path or an fsspec URL) and write a CSV")
    parser.add_argument("--split", default="test", help="the split of --dataset to predict (default test)")
    parser.add_argument("--output", type=Path, default=Path("predictions.csv"),
                        help="CSV path for --batch and --dataset (default predictions.csv)")
    parser.add_argument("--top_k", type=int, default=3, help="expressions to print per clip")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--num_frames", type=int, help="override the checkpoint's frames per clip")
    parser.add_argument("--image_size", type=int, help="override the checkpoint's input size")
    parser.add_argument("--sampling", choices=["segment", "window", "dfer-clip", "mae-dfer"],
                        help="override the checkpoint's sampling (docs/sampling.md)")
    parser.add_argument("--test_views", help="temporal x spatial views, e.g. 2x2 (default: the checkpoint's)")
    parser.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    args = parser.parse_args(argv)
    if sum(map(bool, (args.clips, args.batch, args.dataset))) != 1:
        parser.error("give clips to classify, --batch FOLDER or --dataset DIR: one of the three")
    return args


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    source = args.batch or (args.dataset if args.dataset and "://" not in args.dataset else None)
    if source:
        try:  # the clips may be the archive (or a built folder): the CSV goes elsewhere
            check_outside_archive(args.output, source, "--output")
        except OutputRefused as err:
            print(f"predict.py: error: {err}", file=sys.stderr)
            return 2
    card = None
    if args.dataset:
        try:  # before the checkpoint is loaded: a wrong folder or split fails at once
            card = read_split_card(args.dataset, args.split)
        except Ferv39kError as err:
            print(f"predict.py: error: {err}", file=sys.stderr)
            return 1
    predictor = ClipPredictor(args.checkpoint, num_frames=args.num_frames, image_size=args.image_size,
                              sampling=args.sampling, test_views=args.test_views, device=args.device)
    if args.dataset:
        count = write_split_csv(predictor, args.dataset, args.split, args.output, args.batch_size, card)
        print(f"wrote {count} predictions of split {args.split} to {args.output}")
        return 0
    if args.batch:
        clips = find_clips(args.batch)
        if not clips:
            print(f"no clips (frame folders or videos) under {args.batch}", file=sys.stderr)
            return 1
        count = write_csv(predictor, clips, args.batch, args.output, args.batch_size)
        print(f"wrote {count} predictions to {args.output}")
        return 0
    for clip in args.clips:
        if not clip.exists():
            print(f"{clip}: no such file or folder", file=sys.stderr)
            return 1
    for clip in args.clips:
        [probs] = predictor.probabilities([clip])
        ranked = ", ".join(f"{label} {p:.3f}" for label, p in predictor.top(probs, args.top_k))
        print(f"{clip}: {ranked}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
