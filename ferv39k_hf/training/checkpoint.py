"""The checkpoint protocol: model with the dataset's labels, the clip protocol in its configs, its card, its push."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from transformers import AutoConfig, AutoModelForVideoClassification, TrainingArguments

from ferv39k_hf.clips.protocol import image_processor_config, write_processor_configs
from ferv39k_hf.dataset import hub

logger = logging.getLogger(__name__)

__all__ = ["IMAGENET_DEFAULT_MEAN", "IMAGENET_DEFAULT_STD", "processor_settings", "build_model", "clip_protocol",
           "checkpoint_image_processor", "write_checkpoint_files", "push_checkpoint"]

IMAGENET_DEFAULT_MEAN = [0.485, 0.456, 0.406]
IMAGENET_DEFAULT_STD = [0.229, 0.224, 0.225]


def processor_settings(source: Optional[str], **hub_kwargs: Any) -> Dict[str, Any]:
    """``{"mean", "std", "size"}`` from the image processor config (preprocessor_config.json) at ``source``.

    ``source`` is a Hub id or folder; ``{}`` when it is None or has no such file (then the caller uses
    ImageNet statistics and the model's size). ``hub_kwargs``: ``cache_dir``, ``revision``, ``token``.
    """
    from transformers.image_processing_utils import ImageProcessingMixin

    if source is None:
        return {}
    try:
        config, _ = ImageProcessingMixin.get_image_processor_dict(source, **hub_kwargs)
    except OSError:
        logger.warning("no image processor config at %s: using ImageNet mean/std and the model's image size", source)
        return {}
    crop, size = config.get("crop_size") or {}, config.get("size") or {}
    side = crop.get("height") or size.get("shortest_edge") or size.get("height")
    return {"mean": config.get("image_mean"), "std": config.get("image_std"), "size": side}


def build_model(labels: Sequence[str], *, model_name_or_path: Optional[str] = None, config_name: Optional[str] = None,
                model_type: Optional[str] = None, config_overrides: Optional[str] = None, from_scratch: bool = False,
                num_frames: Optional[int] = None, image_size: Optional[int] = None,
                ignore_mismatched_sizes: bool = True, **hub_kwargs: Any) -> Tuple[Any, Any]:
    """(config, model) for video classification into ``labels`` (the dataset's class words, in id order).

    A pretrained body from ``model_name_or_path`` (unless ``from_scratch``) with a new head, or a
    model built from ``config_name`` / ``model_type``. ``config_overrides`` (``"hidden_size=64,..."``),
    ``num_frames`` and ``image_size`` change the config. A checkpoint naming the same classes in
    another order is refused (its head would be silently relabelled). Float32 clips are cast to the
    weights' dtype in the forward. ``hub_kwargs``: ``cache_dir``, ``revision``, ``token``.
    """
    id2label = dict(enumerate(labels))
    # problem_type stated up front: left None, the model's loss sets it on the first call, and under
    # --torch_compile that change of the config forces a recompile at the second step
    label_kwargs = dict(id2label=id2label, label2id={n: i for i, n in id2label.items()},
                        finetuning_task="video-classification", problem_type="single_label_classification")
    pretrained = model_name_or_path and not from_scratch
    if pretrained:
        _check_label_order(AutoConfig.from_pretrained(model_name_or_path, **hub_kwargs), list(labels))
    if config_name or model_name_or_path:
        config = AutoConfig.from_pretrained(config_name or model_name_or_path, **label_kwargs, **hub_kwargs)
    elif model_type:
        config = AutoConfig.for_model(model_type, **label_kwargs)
    else:
        raise ValueError("pass --model_name_or_path, --config_name or --model_type")
    if config_overrides:
        config.update_from_string(config_overrides)
    if num_frames and num_frames != config.num_frames:
        logger.warning("num_frames %d replaces the config's %d", num_frames, config.num_frames)
        config.num_frames = num_frames
    if image_size and image_size != config.image_size:
        logger.warning("image size %d replaces the config's %d", image_size, config.image_size)
        config.image_size = image_size
    if pretrained:
        model = AutoModelForVideoClassification.from_pretrained(
            model_name_or_path, config=config, ignore_mismatched_sizes=ignore_mismatched_sizes, **hub_kwargs)
    else:
        model = AutoModelForVideoClassification.from_config(config)
    # float32 clips of the CPU path in the weights' dtype (on_device batches: DeviceFinish finishes in it)
    model.register_forward_pre_hook(_pixels_in_model_dtype, with_kwargs=True)
    return config, model


def _check_label_order(checkpoint_config, labels: List[str]) -> None:
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


def clip_protocol(config, *, sampling: str, window_stride: int, test_views: str, mean: Sequence[float],
                  std: Sequence[float], dataset_config: str, label_order: str, dataset: str = "ferv39k",
                  fold: Optional[int] = None) -> Dict[str, Any]:
    """How clips were made: set it as ``model.config.ferv39k`` (config.json), stated in the card, read by predict.py.

    Example: ``clip_protocol(config, sampling="segment", window_stride=1, test_views="2x2",
    mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD, dataset_config="faces", label_order="alphabetical")``.
    """
    return {"num_frames": config.num_frames, "image_size": config.image_size, "sampling": sampling,
            "window_stride": window_stride, "test_views": test_views, "mean": list(mean), "std": list(std),
            "dataset_config": dataset_config, "label_order": label_order,
            **({} if dataset == "ferv39k" else {"dataset": dataset, "fold": fold})}


def checkpoint_image_processor(protocol: Dict[str, Any]):
    """The image processor to give Trainer as ``processing_class``: saved with each checkpoint, it holds mean, std,
    size and the whole clip protocol, for predict.py, the video-classification pipeline and the Hub."""
    try:
        from transformers import VideoMAEImageProcessorPil as Processor  # transformers 5: no torchvision needed
    except ImportError:  # transformers 4
        from transformers import VideoMAEImageProcessor as Processor
    settings = image_processor_config(protocol)
    settings.pop("image_processor_type")  # the class sets it
    return Processor(**settings)


def write_checkpoint_files(training_args: TrainingArguments, *, labels: Sequence[str], protocol: Dict[str, Any],
                           model_type: str, results: Optional[Dict[str, Any]], eval_split: str = "test",
                           base_model: Optional[str] = None) -> Path:
    """The model card (``README.md``, docs/model-cards.md) and ``video_preprocessor_config.json`` beside the model.

    ``results`` is the :class:`ClipScorer`'s ``last`` score of ``eval_split``, or None (no evaluation: the
    card says so). Call it on process 0 once the model is saved. Returns the card's path.
    """
    name = training_args.hub_model_id or Path(training_args.output_dir).absolute().name
    training = {"learning_rate": training_args.learning_rate,
                "train_batch_size (per device)": training_args.per_device_train_batch_size,
                "devices": training_args.world_size, "epochs": training_args.num_train_epochs,
                "max_steps": training_args.max_steps, "seed": training_args.seed}
    card = hub.render_model_card(
        model_name=name.split("/")[-1], base_model=base_model, label_names=list(labels),
        label_order=protocol["label_order"], dataset_config=protocol["dataset_config"], protocol=protocol,
        results=results or {"war": None, "uar": None, "per_scenario": {}}, eval_split=eval_split, training=training,
        dataset=protocol.get("dataset", "ferv39k"), fold=protocol.get("fold"))
    path = Path(training_args.output_dir, "README.md")
    path.write_text(card, encoding="utf-8")
    # the Trainer saved preprocessor_config.json from checkpoint_image_processor; the video processor's file is ours
    write_processor_configs(training_args.output_dir, protocol, model_type, image=False)
    return path


def push_checkpoint(training_args: TrainingArguments, token: Optional[str] = None) -> Any:
    """Upload ``output_dir`` (the checkpoint and its card, never data) to ``hub_model_id`` (default: the folder's
    name), private if ``hub_private_repo``, on ``hub_revision`` where this transformers has it."""
    repo_id = training_args.hub_model_id or Path(training_args.output_dir).absolute().name
    revision = getattr(training_args, "hub_revision", None)  # --hub_revision: transformers >= 4.51
    pushed = hub.push_checkpoint(training_args.output_dir, repo_id, token=token,
                                 private=training_args.hub_private_repo, revision=revision)
    logger.info("pushed %d files to %s: %s", pushed.num_files, pushed.repo_id, pushed.commit_url)
    return pushed
