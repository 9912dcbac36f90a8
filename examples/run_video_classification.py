#!/usr/bin/env python
"""Fine-tune a video transformer (VideoMAE, TimeSformer, ...) on FERV39k and score it by WAR and UAR.

    python examples/run_video_classification.py \
        --model_name_or_path MCG-NJU/videomae-base --dataset_dir ferv39k \
        --output_dir videomae-ferv39k --do_train --do_eval --test_views 2x2 \
        --per_device_train_batch_size 8 --learning_rate 5e-5 --num_train_epochs 3

Data: a folder made by ``ferv39k-hf build`` (``--dataset_dir``) or a raw archive read through the
package's builder (``--archive_dir``); ``--streaming true`` reads the built folder's Parquet shards
as they are, local or from an fsspec URL, each torchrun / accelerate process its own share
(docs/scale-out.md). The pieces (Trainer subclass, collators, compute_metrics, checkpoint protocol,
model card, push) are ``ferv39k_hf.training``'s (docs/training.md); this script is arguments and
``main``. Evaluation writes ``eval_war`` / ``eval_uar`` to ``all_results.json``, the breakdowns to
``eval_per_scene.json`` and per-clip predictions to ``eval_predictions.csv`` (for ``ferv39k-hf
score``); a plot of the loss and WAR/UAR goes to ``training_curves.png``. Under torchrun on CPUs the
processes join one job on gloo unless ``--ddp_backend`` says otherwise.
"""

import json
import logging
import os
import sys
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import datasets
import torch
import transformers
from transformers import HfArgumentParser, TrainingArguments, set_seed

import ferv39k_hf
from ferv39k_hf.dataset.streaming import is_remote
from ferv39k_hf.metrics.folds import aggregate_folds
from ferv39k_hf.training import (
    IMAGENET_DEFAULT_MEAN,
    IMAGENET_DEFAULT_STD,
    ClipCollator,
    ClipScorer,
    ClipViewTrainer,
    RunSummary,
    StreamCollator,
    build_model,
    check_output_dir,
    checkpoint_image_processor,
    clip_counts,
    clip_protocol,
    evaluate_stream,
    load_clips,
    load_streams,
    mark_written,
    parse_test_views,
    plot_training,
    preset_size,
    processor_settings,
    push_checkpoint,
    save_evaluation,
    steps_per_epoch,
    streamed_max_steps,
    subset,
    write_checkpoint_files,
)

logger = logging.getLogger(__name__)


@dataclass
class ModelArguments:
    model_name_or_path: Optional[str] = field(
        default=None, metadata={"help": "Hub id (MCG-NJU/videomae-base) or local checkpoint folder to start from."})
    config_name: Optional[str] = field(default=None, metadata={"help": "Config to use instead of the model's."})
    model_type: Optional[str] = field(
        default=None,
        metadata={"help": "Without a checkpoint: the architecture to build from scratch (videomae, timesformer)."})
    config_overrides: Optional[str] = field(
        default=None, metadata={"help": "Config overrides, e.g. 'hidden_size=64,num_hidden_layers=2,image_size=32,"
                                        "num_frames=8,patch_size=8,tubelet_size=2'."})
    from_scratch: bool = field(default=False,
                               metadata={"help": "Random weights: use only the config of the checkpoint."})
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
    eval_split: str = field(default="test",
                            metadata={"help": "The split scored at the end (the published protocol: test)."})
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
    fold: Optional[str] = field(
        default=None, metadata={"help": "DFEW and MAFW (built or raw): train and score on fold K (1..5) of the "
                                        "official five, or 'all': the five runs in OUTPUT_DIR/fold1..fold5, then "
                                        "the mean ± std of WAR and UAR in OUTPUT_DIR/folds_results.json."})
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
        self.temporal_views, self.spatial_views = parse_test_views(self.sampling, self.test_views)
        self.test_views = f"{self.temporal_views}x{self.spatial_views}"
        if self.streaming and self.dataset_dir is None:
            raise ValueError("--streaming reads a built folder: pass --dataset_dir (made by 'ferv39k-hf build')")
        if self.dataset_dir and is_remote(self.dataset_dir) and not self.streaming:
            raise ValueError(f"--dataset_dir {self.dataset_dir} is a URL: pass --streaming true to read it")
        if self.fold is not None and self.fold not in ("1", "2", "3", "4", "5", "all"):
            raise ValueError(f"--fold must be 1 to 5 or all, got {self.fold!r}")
        if self.fold is not None and self.streaming:
            raise ValueError("--fold reads a fold's rows of the table: drop --streaming")
        if self.shuffle_buffer < 0:
            raise ValueError(f"--shuffle_buffer must be >= 0, got {self.shuffle_buffer}")


def parse_arguments(argv: Optional[List[str]] = None):
    """The three argument dataclasses, from ``argv``, the command line, or one JSON file named on it.

    Under torchrun / accelerate on a machine without CUDA, a run that names no ``--ddp_backend`` gets gloo:
    without it transformers makes every CPU process a world of its own (independent copies of the run).
    """
    parser = HfArgumentParser((ModelArguments, DataTrainingArguments, TrainingArguments))
    if argv is None and len(sys.argv) == 2 and sys.argv[1].endswith(".json"):
        with open(os.path.abspath(sys.argv[1]), encoding="utf-8") as handle:
            settings = json.load(handle)
        if _needs_gloo(settings.get("ddp_backend"), bool(settings.get("use_cpu"))):
            settings["ddp_backend"] = "gloo"
        return parser.parse_dict(settings)
    argv = list(sys.argv[1:] if argv is None else argv)
    use_cpu = any(a == "--use_cpu" and argv[i + 1:i + 2] not in (["false"], ["False"]) or a == "--use_cpu=true"
                  for i, a in enumerate(argv))
    if _needs_gloo(next((a for a in argv if a.startswith("--ddp_backend")), None), use_cpu):
        argv += ["--ddp_backend", "gloo"]
    return parser.parse_args_into_dataclasses(args=argv)


def _needs_gloo(backend_given, use_cpu: bool) -> bool:
    if backend_given or int(os.environ.get("WORLD_SIZE", "1") or 1) < 2 or (torch.cuda.is_available() and not use_cpu):
        return False
    if os.environ.get("RANK", "0") == "0":
        print(f"{os.environ['WORLD_SIZE']} CPU processes and no --ddp_backend: running them as one job on gloo",
              file=sys.stderr)
    return True


def setup_logging(training_args: TrainingArguments) -> None:
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s",
                        handlers=[logging.StreamHandler(sys.stdout)])
    log_level = training_args.get_process_log_level()
    logger.setLevel(log_level)
    transformers.utils.logging.set_verbosity(log_level)
    datasets.utils.logging.set_verbosity(log_level)
    # the run summary, the loss pace and the files written: process 0 says them
    logging.getLogger("ferv39k_hf").setLevel(logging.INFO if training_args.should_log else logging.WARNING)
    logger.info("Training/evaluation parameters %s", training_args)


def load_data(data_args: DataTrainingArguments, training_args: TrainingArguments):
    """The splits (map-style, or this process's streams), labels and card; for a stream also its steps per epoch."""
    if not data_args.streaming:
        with training_args.main_process_first(desc="loading FERV39k"):
            data = load_clips(data_args.dataset_dir, data_args.archive_dir, eval_split=data_args.eval_split,
                              dataset_config=data_args.dataset_config, label_order=data_args.label_order,
                              validation_fraction=data_args.validation_fraction,
                              fold=None if data_args.fold is None else int(data_args.fold))
        return data, None
    if training_args.do_train and str(getattr(training_args.eval_strategy, "value", "no")) != "no":
        raise ValueError("--streaming scores the test split once, after training: pass --eval_strategy no")
    if training_args.do_train and training_args.auto_find_batch_size:
        raise ValueError("--streaming counts each epoch's batches from --per_device_train_batch_size, which "
                         "--auto_find_batch_size would change mid-run: drop it and pass a batch size that fits")
    data = load_streams(data_args.dataset_dir, eval_split=data_args.eval_split, train=training_args.do_train,
                        shuffle_buffer=data_args.shuffle_buffer, seed=training_args.seed,
                        max_train_samples=data_args.max_train_samples, max_eval_samples=data_args.max_eval_samples,
                        rank=training_args.process_index, world_size=training_args.world_size)
    if not training_args.do_train:
        return data, None
    rows = min(data.rows["train"], data_args.max_train_samples or data.rows["train"])
    per_epoch = steps_per_epoch(rows, training_args.world_size, training_args.per_device_train_batch_size,
                                training_args.gradient_accumulation_steps)
    training_args.max_steps = streamed_max_steps(training_args, per_epoch)
    return data, per_epoch


def make_model(model_args: ModelArguments, data_args: DataTrainingArguments, data):
    """The config and model with the dataset's labels, and the clip protocol recorded in its config."""
    hub_kwargs = dict(cache_dir=model_args.cache_dir, revision=model_args.model_revision, token=model_args.token)
    base = None if model_args.from_scratch else model_args.model_name_or_path
    settings = processor_settings(model_args.image_processor_name or base, **hub_kwargs)
    size = data_args.image_size or preset_size(data_args.sampling) or settings.get("size")
    config, model = build_model(
        data.labels, model_name_or_path=model_args.model_name_or_path, config_name=model_args.config_name,
        model_type=model_args.model_type, config_overrides=model_args.config_overrides,
        from_scratch=model_args.from_scratch, num_frames=data_args.num_frames, image_size=size,
        ignore_mismatched_sizes=model_args.ignore_mismatched_sizes, **hub_kwargs)
    mean, std = settings.get("mean") or IMAGENET_DEFAULT_MEAN, settings.get("std") or IMAGENET_DEFAULT_STD
    protocol = clip_protocol(config, sampling=data_args.sampling, window_stride=data_args.window_stride,
                             test_views=data_args.test_views, mean=mean, std=std,
                             dataset_config=data.dataset_config, label_order=data.label_order,
                             dataset=data.dataset, fold=data.fold)
    model.config.ferv39k = protocol  # saved in config.json, read back by predict.py
    return config, model, protocol


def make_splits(data_args: DataTrainingArguments, training_args: TrainingArguments, data, config, protocol, model):
    """Transforms (random sample, crop and flip per training clip; fixed views for evaluation), the splits that
    go through them, the collator and the scorer."""
    common = dict(num_frames=config.num_frames, size=config.image_size, sampling=data_args.sampling,
                  mean=protocol["mean"], std=protocol["std"], stride=data_args.window_stride,
                  on_device=data_args.finish_on_device)
    train_transform = ferv39k_hf.VideoClipTransform(train=True, **common)
    eval_transform = ferv39k_hf.VideoClipTransform(train=False, temporal_views=data_args.temporal_views,
                                                   spatial_views=data_args.spatial_views, **common)
    if data_args.finish_on_device:  # batches reach the model as uint8 frames, boxes and flips
        train_transform.device_finish().attach(model)
    if data_args.streaming:  # rows reach the collator as they are; the transform runs on the whole batch
        train_split, eval_split = data.splits.get("train"), data.splits[data_args.eval_split]
        return train_split, eval_split, eval_transform, StreamCollator(train_transform), ClipScorer([], data.labels)
    train_split = subset(data.splits["train"], data_args.max_train_samples, training_args.seed)
    eval_split = subset(data.splits[data_args.eval_split], data_args.max_eval_samples, training_args.seed)
    return (train_split.with_transform(train_transform), eval_split, eval_transform, ClipCollator(eval_transform),
            ClipScorer(eval_split["scene"] if "scene" in eval_split.column_names else None, data.labels))


def main(argv: Optional[List[str]] = None) -> Dict[str, float]:
    model_args, data_args, training_args = parse_arguments(argv)
    if data_args.fold == "all":
        return run_all_folds(list(sys.argv[1:] if argv is None else argv), training_args.output_dir)
    check_output_dir(training_args.output_dir, data_args.archive_dir, data_args.dataset_dir)
    training_args.remove_unused_columns = False  # the transform needs the frames column
    push_to_hub, training_args.push_to_hub = training_args.push_to_hub, False  # pushed once, with our card, at the end
    # training_args.bin pickles the arguments and is uploaded with the checkpoint: keep the token out of it
    hub_token, training_args.hub_token = training_args.hub_token, None
    setup_logging(training_args)
    set_seed(training_args.seed)

    data, stream_steps = load_data(data_args, training_args)
    config, model, protocol = make_model(model_args, data_args, data)
    train_split, eval_split, eval_transform, collator, scorer = make_splits(
        data_args, training_args, data, config, protocol, model)
    used = {"train": train_split, data_args.eval_split: eval_split} if training_args.do_train else {
        data_args.eval_split: eval_split}
    counts = {name: data.rows[name] for name in used} if data_args.streaming else clip_counts(used)
    base = None if model_args.from_scratch else model_args.model_name_or_path
    summary = RunSummary(clips=counts, labels=data.labels, protocol=protocol, model_name=base)

    trainer = ClipViewTrainer(
        model=model,
        args=training_args,
        train_dataset=train_split if training_args.do_train else None,
        eval_dataset=eval_split if training_args.do_eval and not data_args.streaming else None,
        processing_class=checkpoint_image_processor(protocol),
        data_collator=collator,
        compute_metrics=scorer,
        callbacks=[summary],
        stream_steps_per_epoch=stream_steps,
        stream_settings={"shuffle_buffer": data_args.shuffle_buffer, "max_train_samples": data_args.max_train_samples},
    )
    if training_args.fsdp and not getattr(trainer, "is_fsdp_enabled", True):
        # accelerate turns FSDP on only for accelerators: on CPU processes --fsdp quietly becomes DDP
        engine = getattr(trainer.accelerator.distributed_type, "value", "?")
        logger.warning("--fsdp was given, but accelerate runs this %s job as %s: the model is replicated, not "
                       "sharded", training_args.device.type, engine)
    metrics = run(trainer, data_args, data, eval_split, eval_transform, scorer, summary, protocol)
    if trainer.is_world_process_zero() and training_args.do_train:
        write_checkpoint_files(training_args, labels=data.labels, protocol=protocol, model_type=config.model_type,
                               results=scorer.last, eval_split=data_args.eval_split, base_model=base)
        mark_written(training_args.output_dir, "README.md")
        plot_training(training_args.output_dir, trainer.state.log_history)
        if push_to_hub:
            push_checkpoint(training_args, hub_token)
    if data_args.streaming and torch.distributed.is_available() and torch.distributed.is_initialized():
        # ranks leave together and shut gloo/nccl down before exit: a rank that left while another still wrote
        # the card was seen to abort in the process group's destructor ("terminate called without an active exception")
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return metrics


def run_all_folds(argv: List[str], output_dir: str) -> Dict[str, float]:
    """``--fold all``: the five folds' runs in ``output_dir/foldK``, then their mean ± std, as papers report."""
    results = []
    for k in range(1, 6):  # argparse keeps the last of a repeated option
        metrics = main([*argv, "--fold", str(k), "--output_dir", os.path.join(output_dir, f"fold{k}")])
        results.append({"fold": k, "war": metrics.get("eval_war"), "uar": metrics.get("eval_uar")})
    if any(r["war"] is None for r in results):
        return {}  # no evaluation (--do_eval not given): nothing to aggregate
    summary = aggregate_folds(results)
    if int(os.environ.get("RANK", "0")) == 0:
        with open(os.path.join(output_dir, "folds_results.json"), "w", encoding="utf-8") as handle:
            json.dump(summary, handle, indent=2)
    logger.info("5-fold mean: WAR %.2f ± %.2f, UAR %.2f ± %.2f (sample std over the folds)",
                100 * summary["war_mean"], 100 * summary["war_std"], 100 * summary["uar_mean"],
                100 * summary["uar_std"])
    return {"war_mean": summary["war_mean"], "war_std": summary["war_std"], "uar_mean": summary["uar_mean"],
            "uar_std": summary["uar_std"]}


def run(trainer, data_args, data, eval_split, eval_transform, scorer, summary, protocol) -> Dict[str, float]:
    """Train (saving the model, train metrics and state), then score the evaluation split; the metrics."""
    args = trainer.args
    if args.do_train:
        result = trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
        trainer.save_model()
        trainer.log_metrics("train", result.metrics)
        trainer.save_metrics("train", result.metrics)
        trainer.save_state()
        if trainer.is_world_process_zero():
            mark_written(args.output_dir, "train_results.json", "all_results.json")
    else:
        summary.log(trainer)
    if not args.do_eval:
        return {}
    if data_args.streaming:
        rows = data.rows[data_args.eval_split]
        expected = min(rows, data_args.max_eval_samples or rows)
        metrics = evaluate_stream(trainer, eval_split, eval_transform, scorer, expected, data_args.eval_split)
        num_clips = expected
    else:
        metrics = trainer.evaluate(eval_split, metric_key_prefix="eval")
        num_clips = len(eval_split)
    save_evaluation(trainer, metrics, scorer, split=data_args.eval_split, num_clips=num_clips, protocol=protocol)
    return metrics


if __name__ == "__main__":
    from ferv39k_hf.cli import exit_on_package_error  # a bad dataset or storage ends in one line

    exit_on_package_error(main, "run_video_classification.py")
