"""A checkpoint's clip protocol, written where transformers' image and video processors read it.

A FERV39k checkpoint is only usable with the clips it was trained on: how many
frames, which ones, at what size, normalised how, and how many test views. The
example script records that protocol as a dict (``config.json``'s ``ferv39k``)
and this module turns it into the two processor configs transformers loads
from a checkpoint folder:

- ``preprocessor_config.json``, the image processor config that
  ``pipeline("video-classification")`` and ``AutoImageProcessor`` use today;
- ``video_preprocessor_config.json``, the video processor config that
  ``AutoVideoProcessor`` reads (transformers 5; the pipeline prefers it when
  torchvision is installed, and warns that image processors for video are
  deprecated).

Both are written as plain JSON, so neither torchvision (which transformers'
video processor classes need) nor a transformers version that has video
processors is required to make them. The standard keys carry what transformers
acts on (mean, std, resize, centre crop, and for the video processor the number
of frames to sample); the key ``ferv39k`` carries the whole protocol, including
what transformers has no key for (the package's sampler, the test views).

What transformers does with these is close to, not the same as, the package's
evaluation transform: its video processor samples frames ``i * n // T`` (the
first frame of each of T equal segments) and refuses clips shorter than T,
where :class:`ferv39k_hf.VideoClipTransform` takes segment centres (or a
window) and pads short clips; the video-classification pipeline with an image
processor takes the first T frames. For the scores in the model card use the
package's transform (``examples/predict.py`` does).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

__all__ = [
    "IMAGE_PROCESSOR_FILE",
    "VIDEO_PROCESSOR_FILE",
    "VIDEO_PROCESSOR_CLASSES",
    "image_processor_config",
    "video_processor_config",
    "write_processor_configs",
]

# transformers.utils.IMAGE_PROCESSOR_NAME and VIDEO_PROCESSOR_NAME (the latter only in
# transformers with video processors); spelled out so older versions can write them too.
IMAGE_PROCESSOR_FILE = "preprocessor_config.json"
VIDEO_PROCESSOR_FILE = "video_preprocessor_config.json"

# The video processor class transformers maps each model type to (its auto mapping).
VIDEO_PROCESSOR_CLASSES: Mapping[str, str] = {
    "videomae": "VideoMAEVideoProcessor",
    "timesformer": "TimesformerVideoProcessor",
}
# The image processor the Hub's VideoMAE and TimeSformer checkpoints name; transformers 5
# loads it without torchvision (its PIL backend), transformers 4 as it is.
IMAGE_PROCESSOR_CLASS = "VideoMAEImageProcessor"

_REQUIRED = ("num_frames", "image_size", "sampling", "test_views", "mean", "std")
_BILINEAR = 2  # PIL.Image.BILINEAR, what VideoMAE's processors resample with (antialiased, as the package's resize)


def _checked(protocol: Mapping[str, Any]) -> Dict[str, Any]:
    """A JSON-ready copy of ``protocol``; ValueError naming the first missing or malformed key."""
    missing = [key for key in _REQUIRED if protocol.get(key) is None]
    if missing:
        raise ValueError(f"the clip protocol lacks {', '.join(missing)}: it needs {', '.join(_REQUIRED)}")
    for key in ("num_frames", "image_size"):
        if not isinstance(protocol[key], int) or isinstance(protocol[key], bool) or protocol[key] < 1:
            raise ValueError(f"the clip protocol's {key} must be a positive int, got {protocol[key]!r}")
    for key in ("mean", "std"):
        if len(protocol[key]) != 3:
            raise ValueError(f"the clip protocol's {key} needs 3 values (R, G, B), got {protocol[key]!r}")
    return json.loads(json.dumps(dict(protocol)))  # plain lists and numbers, or TypeError naming the value


def _pixel_settings(protocol: Mapping[str, Any]) -> Dict[str, Any]:
    """The keys image and video processors share: resize the short side, centre crop, rescale, normalise."""
    side = protocol["image_size"]
    return {
        "do_convert_rgb": True,
        "do_resize": True,
        "size": {"shortest_edge": side},
        "default_to_square": False,
        "resample": _BILINEAR,
        "do_center_crop": True,
        "crop_size": {"height": side, "width": side},
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": [float(m) for m in protocol["mean"]],
        "image_std": [float(s) for s in protocol["std"]],
    }


def image_processor_config(protocol: Mapping[str, Any]) -> Dict[str, Any]:
    """The contents of ``preprocessor_config.json`` for a checkpoint trained with ``protocol``.

    Args:
        protocol: the clip protocol, as the example script records it in
            ``config.json``: ``num_frames`` (int), ``image_size`` (int, the square
            input side), ``sampling`` (str), ``test_views`` (str, temporal x
            spatial, e.g. ``"2x2"``), ``mean`` and ``std`` (3 floats each);
            other keys (``window_stride``, ``dataset_config``, ``label_order``)
            are kept as they are.

    Returns:
        A JSON-ready dict: ``image_processor_type`` plus the keys VideoMAE's image
        processor reads (``size``, ``crop_size``, ``image_mean``, ``image_std``,
        ``resample``, ...), ``num_frames``, and the whole protocol under ``ferv39k``.
        Every key becomes an attribute of the loaded processor.

    Example:
        >>> config = image_processor_config({"num_frames": 16, "image_size": 224, "sampling": "segment",
        ...     "test_views": "2x2", "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]})
        >>> config["crop_size"], config["num_frames"]
        ({'height': 224, 'width': 224}, 16)
    """
    protocol = _checked(protocol)
    return {"image_processor_type": IMAGE_PROCESSOR_CLASS, **_pixel_settings(protocol),
            "num_frames": protocol["num_frames"], "ferv39k": protocol}


def video_processor_config(protocol: Mapping[str, Any], model_type: Optional[str]) -> Dict[str, Any]:
    """The contents of ``video_preprocessor_config.json`` for a checkpoint trained with ``protocol``.

    Args:
        protocol: the clip protocol (see :func:`image_processor_config`).
        model_type: the checkpoint's ``config.model_type``; for ``videomae`` and
            ``timesformer`` the file names the video processor class
            (``video_processor_type``), for any other type it names none and
            ``AutoVideoProcessor`` picks the class from the model config.

    Returns:
        A JSON-ready dict of the keys transformers' ``BaseVideoProcessor`` takes:
        ``do_sample_frames`` (True) and ``num_frames``, so a whole video is cut to
        the checkpoint's frame count, the resize, crop and normalisation keys, and
        the whole protocol under ``ferv39k``.

    Example:
        >>> config = video_processor_config({"num_frames": 16, "image_size": 160, "sampling": "window",
        ...     "test_views": "2x2", "mean": [0.5] * 3, "std": [0.5] * 3}, "videomae")
        >>> config["video_processor_type"], config["num_frames"], config["size"]
        ('VideoMAEVideoProcessor', 16, {'shortest_edge': 160})
    """
    protocol = _checked(protocol)
    config: Dict[str, Any] = {}
    if model_type in VIDEO_PROCESSOR_CLASSES:
        config["video_processor_type"] = VIDEO_PROCESSOR_CLASSES[model_type]
    config.update(_pixel_settings(protocol))
    config.update({"do_sample_frames": True, "num_frames": protocol["num_frames"], "ferv39k": protocol})
    return config


def write_processor_configs(
    folder: "os.PathLike[str] | str", protocol: Mapping[str, Any], model_type: Optional[str], *, image: bool = True
) -> List[Path]:
    """Write ``video_preprocessor_config.json`` (and ``preprocessor_config.json``) into a checkpoint folder.

    Args:
        folder: the checkpoint folder (must exist).
        protocol: the clip protocol (see :func:`image_processor_config`).
        model_type: the checkpoint's ``config.model_type``.
        image: also write the image processor config. Pass False where a
            transformers image processor built from :func:`image_processor_config`
            has already saved it (the example's Trainer does).

    Returns:
        The paths written.

    Example:
        >>> paths = write_processor_configs("videomae-ferv39k", model.config.ferv39k,
        ...                                 model.config.model_type)  # doctest: +SKIP
        >>> [p.name for p in paths]  # doctest: +SKIP
        ['video_preprocessor_config.json', 'preprocessor_config.json']
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such checkpoint folder")
    contents = {VIDEO_PROCESSOR_FILE: video_processor_config(protocol, model_type)}
    if image:
        contents[IMAGE_PROCESSOR_FILE] = image_processor_config(protocol)
    written = []
    for name, config in contents.items():
        path = folder / name
        path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        written.append(path)
    return written
