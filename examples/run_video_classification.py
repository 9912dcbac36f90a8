#!/usr/bin/env python
"""Fine-tune a video transformer (VideoMAE, TimeSformer, ...) on FERV39k and score it by WAR and UAR.

    python examples/run_video_classification.py \
        --model_name_or_path MCG-NJU/videomae-base --dataset_dir ferv39k \
        --output_dir videomae-ferv39k --do_train --do_eval --test_views 2x2 \
        --per_device_train_batch_size 8 --learning_rate 5e-5 --num_train_epochs 3

Data: a folder made by ``ferv39k-hf build`` (``--dataset_dir``) or a raw archive read
through the package's builder (``--archive_dir``). ``--streaming true`` reads the built
folder's Parquet shards as they are, with no Arrow cache, from a local path or an fsspec
URL (``s3://bucket/ferv39k``), each torchrun / accelerate process its own share
(:mod:`ferv39k_hf.dataset.streaming`, docs/scale-out.md). Frames are sampled and normalised
by :class:`ferv39k_hf.VideoClipTransform` with the mean, std and size of the model's
image processor config (no torchvision needed). The checkpoint's ``id2label`` is the
dataset's label order. Evaluation on ``test`` writes ``eval_war`` / ``eval_uar`` to
``all_results.json`` and the per-class, per-scene and per-scenario scores to
``eval_per_scene.json``. The clip protocol (frames, sampling, size, mean, std, test
views) goes into ``config.json``, ``preprocessor_config.json`` and
``video_preprocessor_config.json``, where transformers' processors read it, and into the
model card (docs/model-cards.md); ``--push_to_hub`` uploads the checkpoint (never the
data). Runs unchanged under ``torchrun`` and ``accelerate launch``.
"""

import csv
import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import datasets
import numpy as np
import torch
import transformers
from transformers import (
    AutoConfig,
    AutoModelForVideoClassification,
    HfArgumentParser,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    set_seed,
)

import ferv39k_hf
import ferv39k_hf.clips.sampling
from ferv39k_hf.dataset import hub
from ferv39k_hf.clips.presets import get_preset
from ferv39k_hf.dataset import streaming
from ferv39k_hf.training import streamloader
from ferv39k_hf.metrics import average_views, clip_labels, score
from ferv39k_hf.archive.outdirs import check_outside_archive
from ferv39k_hf.clips.protocol import image_processor_config, write_processor_configs

logger = logging.getLogger(__name__)

IMAGENET_DEFAULT_MEAN = [0.485, 0.456, 0.406]
IMAGENET_DEFAULT_STD = [0.229, 0.224, 0.225]


@dataclass
class ModelArguments:
    model_name_or_path: Optional[str] = field(
        default=None, metadata={"help": "Hub id (MCG-NJU/videomae-base) or local checkpoint folder to start from."})
    config_name: Optional[str] = field(default=None, metadata={"help": "Config to use instead of the model's."})
    model_type: Optional[str] = field(
        default=None, metadata={"help": "Without a checkpoint: the architecture to build from scratch (videomae, timesformer)."})
    config_overrides: Optional[str] = field(
        default=None, metadata={"help": "Config overrides, e.g. 'hidden_size=64,num_hidden_layers=2,image_size=32,"
                                        "num_frames=8,patch_size=8,tubelet_size=2'."})
    from_scratch: bool = field(default=False, metadata={"help": "Random weights: use only the config of the checkpoint."})
    image_processor_name: Optional[str] = field(
        default=None, metadata={"help": "Where to read mean/std/size from (default: the checkpoint)."})
    model_revision: str = field(default="main", metadata={"help": "Branch, tag or commit of the checkpoint."})
    cache_dir: Optional[str] = field(default=None, metadata={"help": "Where to store downloaded checkpoints."})
    token: Optional[str] = field(default=None, metadata={"help": "Hub token for private checkpoints."})
    ignore_mismatched_sizes: bool = field(
        default=True, metadata={"help": "Replace the checkpoint's classification head with a 7-class one."})


@dataclass
class DataTrainingArguments:
    dataset_dir: Optional[str] = field(
        default=None, metadata={"help": "A folder made by 'ferv39k-hf build': a local path or, with --streaming, an "
                                        "fsspec URL (s3://bucket/ferv39k, gs://..., hf://datasets/ORG/NAME)."})
    archive_dir: Optional[str] = field(default=None, metadata={"help": "A raw FERV39k archive (read by the builder)."})
    dataset_config: str = field(default="faces", metadata={"help": "faces, scenes or videos."})
    label_order: str = field(default="alphabetical", metadata={"help": "With --archive_dir: alphabetical or dfew."})
    validation_fraction: float = field(default=0.0, metadata={"help": "With --archive_dir: carve a validation split."})
    eval_split: str = field(default="test", metadata={"help": "The split scored at the end (the published protocol: test)."})
    num_frames: Optional[int] = field(default=None, metadata={"help": "Frames per clip (default: the model config's)."})
    image_size: Optional[int] = field(
        default=None, metadata={"help": "Input size (default: the preset's, else the image processor's crop)."})
    sampling: str = field(
        default="segment",
        metadata={"help": "segment: one frame from each of num_frames equal segments of the whole clip (random in "
                          "training, centres at test); window: consecutive frames (--window_stride). Presets that "
                          "reproduce a codebase's clip protocol (frames, size, test views, crop, rotation, flip; "
                          "docs/sampling.md): dfer-clip (224, 1 view) or mae-dfer (160, 2x2 views)."})
    window_stride: int = field(default=1, metadata={"help": "Frame step of window sampling."})
    test_views: Optional[str] = field(
        default=None, metadata={"help": "Temporal x spatial views per test clip, e.g. 2x2 (default: the preset's, "
                                        "else 1x1)."})
    max_train_samples: Optional[int] = field(default=None, metadata={"help": "Use only this many training clips."})
    max_eval_samples: Optional[int] = field(default=None, metadata={"help": "Score only this many test clips."})
    streaming: bool = field(
        default=False, metadata={"help": "Read --dataset_dir's Parquet shards as a stream (no Arrow cache): each "
                                         "torchrun/accelerate process reads its own shards, each DataLoader worker "
                                         "whole shards of those. Without --max_steps, the steps per epoch come "
                                         "from the card's row counts and the world size."})
    shuffle_buffer: int = field(
        default=1024, metadata={"help": "With --streaming: training rows held for shuffling (per DataLoader worker; "
                                        "FERV39k faces rows are ~0.3 MB). Shards are shuffled too, per epoch."})
    finish_on_device: bool = field(
        default=False, metadata={"help": "DataLoader workers only sample and decode; crop, resize, flip and "
                                         "normalise run on the model's device (ferv39k_hf.DeviceFinish)."})

    def __post_init__(self):
        if (self.dataset_dir is None) == (self.archive_dir is None):
            raise ValueError("pass exactly one of --dataset_dir (a built folder) or --archive_dir (a raw archive)")
        if self.sampling not in ferv39k_hf.clips.sampling.SAMPLINGS:
            raise ValueError(f"--sampling must be one of {ferv39k_hf.clips.sampling.SAMPLINGS}, got {self.sampling!r}")
        preset = get_preset(self.sampling)
        if self.test_views is None:
            self.test_views = f"{preset.temporal_views}x{preset.spatial_views}" if preset else "1x1"
        if self.streaming and self.dataset_dir is None:
            raise ValueError("--streaming reads a built folder: pass --dataset_dir (made by 'ferv39k-hf build')")
        if self.dataset_dir and streaming.is_remote(self.dataset_dir) and not self.streaming:
            raise ValueError(f"--dataset_dir {self.dataset_dir} is a URL: pass --streaming true to read it")
        if self.shuffle_buffer < 0:
            raise ValueError(f"--shuffle_buffer must be >= 0, got {self.shuffle_buffer}")
        views = self.test_views.lower().split("x")
        if len(views) != 2 or not all(v.isdigit() and int(v) > 0 for v in views):
            raise ValueError(f"--test_views must look like 2x2, got {self.test_views!r}")
        self.temporal_views, self.spatial_views = int(views[0]), int(views[1])


def load_clips(data_args: DataTrainingArguments) -> datasets.DatasetDict:
    """The dataset as a DatasetDict with undecoded frames, and its config and label order."""
    if data_args.dataset_dir:
        meta = hub.read_card_metadata(data_args.dataset_dir)
        data_args.dataset_config = meta.get("ferv39k_config", data_args.dataset_config)
        data_args.label_order = meta.get("ferv39k_label_order", data_args.label_order)
        clips = datasets.load_dataset(data_args.dataset_dir)
    else:
        clips = ferv39k_hf.load(data_args.archive_dir, config=data_args.dataset_config, label_order=data_args.label_order,
                                validation_fraction=data_args.validation_fraction)
    return ferv39k_hf.undecoded_frames(clips)


def load_streams(data_args: DataTrainingArguments, training_args: TrainingArguments):
    """This process's share of the training and evaluation splits as streams, and the card's rows per split."""
    card = streaming.read_card(data_args.dataset_dir)
    data_args.dataset_config = card.get("ferv39k_config", data_args.dataset_config)
    data_args.label_order = card.get("ferv39k_label_order", data_args.label_order)
    counts = streaming.card_row_counts(card, f"{data_args.dataset_dir}/README.md")
    node = dict(rank=training_args.process_index, world_size=training_args.world_size, card=card)
    clips = {data_args.eval_split: streaming.stream(data_args.dataset_dir, data_args.eval_split,
                                                    max_rows=data_args.max_eval_samples, **node)}
    if training_args.do_train:
        clips["train"] = streaming.stream(data_args.dataset_dir, "train", shuffle_buffer=data_args.shuffle_buffer,
                                          seed=training_args.seed, max_rows=data_args.max_train_samples, **node)
    return clips, counts


def streamed_steps_per_epoch(training_args: TrainingArguments, data_args: DataTrainingArguments, counts) -> int:
    """Optimizer steps in one epoch of every rank: its share of the card's train rows in full batches."""
    rows = min(counts["train"], data_args.max_train_samples or counts["train"])
    return streamloader.steps_per_epoch(rows, training_args.world_size, training_args.per_device_train_batch_size,
                                     training_args.gradient_accumulation_steps)


def streamed_max_steps(training_args: TrainingArguments, data_args: DataTrainingArguments, counts) -> int:
    """--max_steps, or --num_train_epochs passes over the fewest rows any rank gets (card row counts)."""
    if training_args.max_steps > 0:
        return training_args.max_steps
    per_epoch = streamed_steps_per_epoch(training_args, data_args, counts)
    return max(1, int(np.ceil(training_args.num_train_epochs * per_epoch)))


def processor_settings(model_args: ModelArguments) -> Dict[str, Any]:
    """Mean, std and crop size from the image processor config (preprocessor_config.json), if there is one."""
    from transformers.image_processing_utils import ImageProcessingMixin

    source = model_args.image_processor_name or (None if model_args.from_scratch else model_args.model_name_or_path)
    if source is None:
        return {}
    try:
        config, _ = ImageProcessingMixin.get_image_processor_dict(
            source, cache_dir=model_args.cache_dir, revision=model_args.model_revision, token=model_args.token)
    except OSError:
        logger.warning("no image processor config at %s: using ImageNet mean/std and the model's image size", source)
        return {}
    crop, size = config.get("crop_size") or {}, config.get("size") or {}
    side = crop.get("height") or size.get("shortest_edge") or size.get("height")
    return {"mean": config.get("image_mean"), "std": config.get("image_std"), "size": side}


def build_model(model_args: ModelArguments, data_args: DataTrainingArguments, labels: List[str], size: Optional[int]):
    """Config with the dataset's labels and the clip shape, and the model (pretrained body, new head)."""
    id2label = dict(enumerate(labels))
    # problem_type stated up front: left None, the model's loss sets it on the first call, and under
    # --torch_compile that change of the config forces a recompile at the second step
    label_kwargs = dict(id2label=id2label, label2id={n: i for i, n in id2label.items()},
                        finetuning_task="video-classification", problem_type="single_label_classification")
    hub_kwargs = dict(cache_dir=model_args.cache_dir, revision=model_args.model_revision, token=model_args.token)
    pretrained = model_args.model_name_or_path and not model_args.from_scratch
    if pretrained:
        _check_label_order(AutoConfig.from_pretrained(model_args.model_name_or_path, **hub_kwargs), labels)
    if model_args.config_name or model_args.model_name_or_path:
        config = AutoConfig.from_pretrained(model_args.config_name or model_args.model_name_or_path,
                                            **label_kwargs, **hub_kwargs)
    elif model_args.model_type:
        config = AutoConfig.for_model(model_args.model_type, **label_kwargs)
    else:
        raise ValueError("pass --model_name_or_path, --config_name or --model_type")
    if model_args.config_overrides:
        config.update_from_string(model_args.config_overrides)
    if data_args.num_frames and data_args.num_frames != config.num_frames:
        logger.warning("num_frames %d replaces the config's %d", data_args.num_frames, config.num_frames)
        config.num_frames = data_args.num_frames
    if size and size != config.image_size:
        logger.warning("image size %d replaces the config's %d", size, config.image_size)
        config.image_size = size
    if pretrained:
        model = AutoModelForVideoClassification.from_pretrained(
            model_args.model_name_or_path, config=config,
            ignore_mismatched_sizes=model_args.ignore_mismatched_sizes, **hub_kwargs)
    else:
        model = AutoModelForVideoClassification.from_config(config)
    # float32 clips of the CPU path in the weights' dtype (on_device batches: DeviceFinish finishes in it)
    model.register_forward_pre_hook(_pixels_in_model_dtype, with_kwargs=True)
    return config, model


def _check_label_order(checkpoint_config, labels: List[str]) -> None:
    """Refuse a checkpoint that names the same classes in another order: its head would be silently relabelled."""
    theirs = [checkpoint_config.id2label[i] for i in range(checkpoint_config.num_labels)]
    if sorted(theirs) == sorted(labels) and theirs != labels:
        raise ValueError(
            f"the checkpoint's classes are in the order {theirs} but the dataset's are {labels}: "
            "build the dataset with the checkpoint's --label-order, or pass --from_scratch to train a new model")


def _pixels_in_model_dtype(model, args, kwargs):
    """Forward pre-hook: float32 clips cast to the dtype of the model's weights, as a bf16 checkpoint (loaded
    in bf16 by transformers 5) needs; float32 weights, under --bf16's autocast too, take them unchanged."""
    pixels = kwargs.get("pixel_values")
    if pixels is None or not pixels.is_floating_point() or pixels.dtype == model.dtype:
        return None
    return args, {**kwargs, "pixel_values": pixels.to(model.dtype)}


class ClipCollator:
    """Stacks transformed training rows; runs the evaluation transform (and its views) on raw rows."""

    def __init__(self, eval_transform):
        self.eval_transform = eval_transform

    def __call__(self, rows: List[Dict[str, Any]]) -> Dict[str, torch.Tensor]:
        if "pixel_values" in rows[0]:
            return ferv39k_hf.collate_clips(rows)
        return self.eval_transform({key: [r[key] for r in rows] for key in rows[0]})


STREAM_SETTINGS = "ferv39k_stream.json"  # in each checkpoint of a streamed run


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

    Averaging inside the step keeps one prediction per clip, so distributed
    evaluation gathers and trims clips, not views. A streamed training split is
    already this rank's share, so its DataLoader is not sharded again by accelerate; with
    ``stream_steps_per_epoch`` every epoch of it is that many optimizer steps on every rank,
    and a resumed run starts the stream at the epoch and batch the checkpoint stopped at.
    Each checkpoint records the settings that decide which batches the stream gives
    (``STREAM_SETTINGS``); a resume under other settings says which differ.
    """

    def __init__(self, *args, stream_steps_per_epoch: Optional[int] = None,
                 stream_settings: Optional[Dict[str, Any]] = None, **kwargs):
        super().__init__(*args, **kwargs)
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
        if not isinstance(self.train_dataset, torch.utils.data.IterableDataset):
            return super().get_train_dataloader()
        args = self.args
        per_epoch = self.stream_steps_per_epoch
        loader = streamloader.StreamLoader(
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
        view_clip_index = inputs.pop("view_clip_index", None)
        loss, logits, labels = super().prediction_step(model, inputs, prediction_loss_only, ignore_keys)
        if view_clip_index is None or logits is None:
            return loss, logits, labels
        clip_index = view_clip_index.tolist()
        _, probs = average_views(clip_index, logits.float().cpu())
        if labels is not None:
            labels = torch.from_numpy(clip_labels(clip_index, labels.cpu())[1]).to(labels.device)
        return loss, torch.from_numpy(probs).log().to(logits.device), labels


class ClipScorer:
    """``compute_metrics``: WAR/UAR for the Trainer's logs; the full score kept for the JSON report."""

    def __init__(self, scenes: List[int], labels: List[str]):
        self.scenes, self.labels = scenes, labels
        self.last: Dict[str, Any] = {}

    def __call__(self, eval_pred) -> Dict[str, float]:
        predictions = np.argmax(eval_pred.predictions, axis=1)
        self.last = score(predictions=predictions, references=eval_pred.label_ids,
                          scenes=self.scenes, class_words=self.labels)
        metrics = {"war": self.last["war"], "uar": self.last["uar"]}
        for scenario, entry in self.last["per_scenario"].items():
            slug = scenario.lower().replace(" ", "_").replace("-", "_")
            metrics[f"war_{slug}"], metrics[f"uar_{slug}"] = entry["war"], entry["uar"]
        return metrics


def _subset(split: datasets.Dataset, limit: Optional[int], seed: int) -> datasets.Dataset:
    return split if limit is None or limit >= len(split) else split.shuffle(seed=seed).select(range(limit))


def parse_arguments(argv: Optional[List[str]] = None):
    parser = HfArgumentParser((ModelArguments, DataTrainingArguments, TrainingArguments))
    if argv is None and len(sys.argv) == 2 and sys.argv[1].endswith(".json"):
        return parser.parse_json_file(json_file=os.path.abspath(sys.argv[1]))
    return parser.parse_args_into_dataclasses(args=argv)


def setup_logging(training_args: TrainingArguments) -> None:
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s",
                        handlers=[logging.StreamHandler(sys.stdout)])
    log_level = training_args.get_process_log_level()
    logger.setLevel(log_level)
    transformers.utils.logging.set_verbosity(log_level)
    datasets.utils.logging.set_verbosity(log_level)
    logger.info("Training/evaluation parameters %s", training_args)


def main(argv: Optional[List[str]] = None) -> Dict[str, float]:
    model_args, data_args, training_args = parse_arguments(argv)
    for data_dir in (data_args.archive_dir, data_args.dataset_dir):  # checkpoints never go into the data
        if data_dir and not streaming.is_remote(data_dir):
            check_outside_archive(training_args.output_dir, data_dir, "--output_dir")
    training_args.remove_unused_columns = False  # the transform needs the frames column
    push_to_hub, training_args.push_to_hub = training_args.push_to_hub, False  # pushed once, with our card, at the end
    # training_args.bin pickles the arguments and is uploaded with the checkpoint: keep the token out of it
    hub_token, training_args.hub_token = training_args.hub_token, None
    setup_logging(training_args)
    set_seed(training_args.seed)

    if data_args.streaming:
        if training_args.do_train and str(getattr(training_args.eval_strategy, "value", "no")) != "no":
            raise ValueError("--streaming scores the test split once, after training: pass --eval_strategy no")
        if training_args.do_train and training_args.auto_find_batch_size:
            raise ValueError("--streaming counts each epoch's batches from --per_device_train_batch_size, which "
                             "--auto_find_batch_size would change mid-run: drop it and pass a batch size that fits")
        clips, counts = load_streams(data_args, training_args)
        training_args.max_steps = streamed_max_steps(training_args, data_args, counts)
        stream_steps = streamed_steps_per_epoch(training_args, data_args, counts) if training_args.do_train else None
    else:
        with training_args.main_process_first(desc="loading FERV39k"):
            clips = load_clips(data_args)
    if data_args.eval_split not in clips:
        raise ValueError(f"the dataset has no {data_args.eval_split!r} split: {sorted(clips)}")
    labels = clips["train" if "train" in clips else data_args.eval_split].features["label"].names

    settings = processor_settings(model_args)
    preset = get_preset(data_args.sampling)
    size = data_args.image_size or (preset.size if preset else None) or settings.get("size")
    config, model = build_model(model_args, data_args, labels, size)
    mean, std = settings.get("mean") or IMAGENET_DEFAULT_MEAN, settings.get("std") or IMAGENET_DEFAULT_STD
    protocol = clip_protocol(config, data_args, mean, std)
    model.config.ferv39k = protocol  # saved in config.json, read back by predict.py

    # Transforms: random sample, crop and flip per training clip; fixed views for evaluation.
    common = dict(num_frames=config.num_frames, size=config.image_size, sampling=data_args.sampling,
                  mean=mean, std=std, stride=data_args.window_stride, on_device=data_args.finish_on_device)
    train_transform = ferv39k_hf.VideoClipTransform(train=True, **common)
    eval_transform = ferv39k_hf.VideoClipTransform(train=False, temporal_views=data_args.temporal_views,
                                                   spatial_views=data_args.spatial_views, **common)
    if data_args.finish_on_device:  # batches reach the model as uint8 frames, boxes and flips
        train_transform.device_finish().attach(model)
    if data_args.streaming:  # rows reach the collator as they are; the transform runs on the whole batch
        train_split, eval_split = clips.get("train"), clips[data_args.eval_split]
        scorer = ClipScorer([], labels)
        collator = streamloader.StreamCollator(train_transform)
    else:
        train_split = _subset(clips["train"], data_args.max_train_samples, training_args.seed)
        train_split = train_split.with_transform(train_transform)
        eval_split = _subset(clips[data_args.eval_split], data_args.max_eval_samples, training_args.seed)
        scorer = ClipScorer(eval_split["scene"], labels)
        collator = ClipCollator(eval_transform)

    trainer = ClipViewTrainer(
        model=model,
        args=training_args,
        train_dataset=train_split if training_args.do_train else None,
        eval_dataset=eval_split if training_args.do_eval and not data_args.streaming else None,
        processing_class=_image_processor(protocol),
        data_collator=collator,
        compute_metrics=scorer,
        stream_steps_per_epoch=stream_steps if data_args.streaming else None,
        stream_settings={"shuffle_buffer": data_args.shuffle_buffer, "max_train_samples": data_args.max_train_samples},
    )
    if training_args.fsdp and not getattr(trainer, "is_fsdp_enabled", True):
        # accelerate turns FSDP on only for accelerators: on CPU processes --fsdp quietly becomes DDP
        engine = getattr(trainer.accelerator.distributed_type, "value", "?")
        logger.warning("--fsdp was given, but accelerate runs this %s job as %s: the model is replicated, not "
                       "sharded", training_args.device.type, engine)
    if training_args.do_train:
        result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
        trainer.save_model()
        trainer.log_metrics("train", result.metrics)
        trainer.save_metrics("train", result.metrics)
        trainer.save_state()
    if not training_args.do_eval:
        metrics = {}
    elif data_args.streaming:
        expected = min(counts[data_args.eval_split], data_args.max_eval_samples or counts[data_args.eval_split])
        metrics = evaluate_streamed(trainer, eval_split, eval_transform, scorer, data_args, protocol, expected)
    else:
        metrics = evaluate_and_report(trainer, eval_split, scorer, data_args, protocol)
    if trainer.is_world_process_zero() and training_args.do_train:
        card = _model_card(model_args, data_args, training_args, labels, protocol, scorer.last)
        Path(training_args.output_dir, "README.md").write_text(card, encoding="utf-8")
        # the Trainer saved preprocessor_config.json from _image_processor; the video processor's file is ours
        write_processor_configs(training_args.output_dir, protocol, config.model_type, image=False)
        if push_to_hub:
            _push(training_args, hub_token)
    if data_args.streaming and torch.distributed.is_available() and torch.distributed.is_initialized():
        # ranks leave together and shut gloo/nccl down before exit: a rank that left while another still wrote
        # the card was seen to abort in the process group's destructor ("terminate called without an active exception")
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return metrics


def clip_protocol(config, data_args: DataTrainingArguments, mean, std) -> Dict[str, Any]:
    """How clips were made: recorded in config.json, stated in the card, reused by predict.py."""
    return {"num_frames": config.num_frames, "image_size": config.image_size, "sampling": data_args.sampling,
            "window_stride": data_args.window_stride,
            "test_views": f"{data_args.temporal_views}x{data_args.spatial_views}", "mean": list(mean),
            "std": list(std), "dataset_config": data_args.dataset_config, "label_order": data_args.label_order}


def evaluate_and_report(trainer, eval_split, scorer, data_args, protocol) -> Dict[str, float]:
    """Score ``eval_split``: eval_war/eval_uar into all_results.json, the full breakdown into eval_per_scene.json."""
    metrics = trainer.evaluate(eval_split, metric_key_prefix="eval")
    _save_eval(trainer, metrics, len(eval_split), scorer, data_args, protocol)
    return metrics


def _save_eval(trainer, metrics, num_clips, scorer, data_args, protocol) -> None:
    trainer.log_metrics("eval", metrics)
    trainer.save_metrics("eval", metrics)
    if trainer.is_world_process_zero():
        report = {"split": data_args.eval_split, "num_clips": num_clips, "protocol": protocol, **scorer.last}
        Path(trainer.args.output_dir, "eval_per_scene.json").write_text(json.dumps(report, indent=2) + "\n")


def evaluate_streamed(trainer, eval_stream, eval_transform, scorer, data_args, protocol, expected) -> Dict[str, float]:
    """Score a streamed split: every rank its own share, the clips gathered once each; writes what
    :func:`evaluate_and_report` writes, plus eval_predictions.csv (one row per clip, with the rank that scored it)."""
    args, rank, start = trainer.args, trainer.args.process_index, time.time()
    loader = streamloader.StreamLoader(eval_stream, batch_size=args.per_device_eval_batch_size,
                                    num_workers=args.dataloader_num_workers,
                                    collate_fn=streamloader.StreamCollator(eval_transform, keep=("clip_id", "scene")))
    # trainer.model is what Trainer's own evaluation runs: after training under FSDP the sharded wrapper, under
    # DeepSpeed the module with ZeRO-3's gathering hooks, under DDP the plain module (DDP's forward may broadcast
    # buffers). The first two all-gather parameters in every forward, and the ranks' shares may hold different
    # numbers of batches (even none), so lockstep keeps all ranks stepping until the last one is done; the
    # filler steps of a rank that ran out are run and discarded.
    model = trainer.model
    model.eval()
    clips, losses = [], []
    for batch, real in streamloader.lockstep(loader, lambda: _filler_batch(eval_transform)):
        inputs = {key: value for key, value in batch.items() if key not in ("clip_id", "scene")}  # batch unchanged
        rows = inputs["pixel_values"].shape[0]
        loss, logprobs, labels = trainer.prediction_step(model, inputs, prediction_loss_only=False)
        if not real:
            continue
        clip_ids, scenes = batch["clip_id"], batch["scene"]
        losses.append((float(loss) * rows, rows))
        for clip in zip(clip_ids, scenes, labels.tolist(), logprobs.float().cpu().tolist()):
            clips.append((*clip, rank))
    clips, losses = streamloader.gather_across_ranks(clips), streamloader.gather_across_ranks(losses)
    ranks_of: Dict[str, List[int]] = {}
    for clip in clips:
        ranks_of.setdefault(clip[0], []).append(clip[4])
    for clip_id, ranks in ranks_of.items():
        if len(ranks) > 1:
            raise RuntimeError(f"clip {clip_id} of {data_args.eval_split} was scored {len(ranks)} times "
                               f"(ranks {ranks})")
    if len(clips) != expected:
        raise RuntimeError(f"the {data_args.eval_split} split has {expected} clips by its card, but the ranks "
                           f"scored {len(clips)}: the stream lost clips")
    clips.sort()
    scorer.scenes = [clip[1] for clip in clips]
    prediction = transformers.EvalPrediction(predictions=np.array([clip[3] for clip in clips]),
                                             label_ids=np.array([clip[2] for clip in clips]))
    runtime = time.time() - start
    metrics = {"eval_loss": sum(l for l, _ in losses) / max(1, sum(n for _, n in losses)),
               **{f"eval_{key}": value for key, value in scorer(prediction).items()},
               "eval_runtime": round(runtime, 4), "eval_samples_per_second": round(len(clips) / runtime, 3)}
    trainer.log(metrics)
    _save_eval(trainer, metrics, len(clips), scorer, data_args, protocol)
    if trainer.is_world_process_zero():
        with open(Path(args.output_dir, "eval_predictions.csv"), "w", newline="", encoding="utf-8") as out:
            writer = csv.writer(out)
            writer.writerow(["clip_id", "scene", "label", "prediction", "rank"])
            names = scorer.labels
            for clip_id, scene, label, logprob, by in clips:
                writer.writerow([clip_id, scene, names[label], names[int(np.argmax(logprob))], by])
    return metrics


def _filler_batch(transform) -> Dict[str, Any]:
    """One clip of zeros shaped as ``transform``'s batches (one view), for the steps of a rank whose share has
    run out (:func:`ferv39k_hf.training.streamloader.lockstep`); its outputs are never recorded."""
    frames, size = transform.num_frames, transform.size
    batch: Dict[str, Any] = {"labels": torch.zeros(1, dtype=torch.int64), "clip_id": ["<filler>"], "scene": [-1]}
    if transform.on_device:  # uint8 frames, the whole frame as the crop, no flip (see DeviceFinish)
        batch.update(pixel_values=torch.zeros((1, frames, size, size, 3), dtype=torch.uint8),
                     crop_boxes=torch.tensor([[0, 0, size, size]]), flips=torch.zeros(1, dtype=torch.bool))
    else:
        batch["pixel_values"] = torch.zeros((1, frames, 3, size, size))
    return batch


def _push(training_args: TrainingArguments, token: Optional[str]) -> None:
    repo_id = training_args.hub_model_id or Path(training_args.output_dir).absolute().name
    revision = getattr(training_args, "hub_revision", None)  # --hub_revision: transformers >= 4.51
    pushed = hub.push_checkpoint(training_args.output_dir, repo_id, token=token,
                                 private=training_args.hub_private_repo, revision=revision)
    logger.info("pushed %d files to %s: %s", pushed.num_files, pushed.repo_id, pushed.commit_url)


def _image_processor(protocol: Dict[str, Any]):
    """The image processor saved with the checkpoint: mean, std, size and the whole clip protocol, for
    predict.py, the video-classification pipeline and the Hub (ferv39k_hf.clips.protocol.image_processor_config)."""
    try:
        from transformers import VideoMAEImageProcessorPil as Processor  # transformers 5: no torchvision needed
    except ImportError:  # transformers 4
        from transformers import VideoMAEImageProcessor as Processor
    settings = image_processor_config(protocol)
    settings.pop("image_processor_type")  # the class sets it
    return Processor(**settings)


def _model_card(model_args, data_args, training_args, labels, protocol, results) -> str:
    base = None if model_args.from_scratch else model_args.model_name_or_path
    name = training_args.hub_model_id or Path(training_args.output_dir).absolute().name
    training = {"learning_rate": training_args.learning_rate,
                "train_batch_size (per device)": training_args.per_device_train_batch_size,
                "devices": training_args.world_size, "epochs": training_args.num_train_epochs,
                "max_steps": training_args.max_steps, "seed": training_args.seed}
    if not results:
        results = {"war": None, "uar": None, "per_scenario": {}}
    return hub.render_model_card(model_name=name.split("/")[-1], base_model=base, label_names=labels,
                                 label_order=data_args.label_order, dataset_config=data_args.dataset_config,
                                 protocol=protocol, results=results, eval_split=data_args.eval_split, training=training)


if __name__ == "__main__":
    from ferv39k_hf.cli import exit_on_package_error  # a bad dataset or storage ends in one line

    exit_on_package_error(main, "run_video_classification.py")
