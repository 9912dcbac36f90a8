"""The clip protocols of published FERV39k codebases: size, test views and training crops, per preset.

A preset is selected by its name as ``sampling=`` (``"dfer-clip"``, ``"mae-dfer"``)
wherever the package samples clips. Its frame indices live in
:mod:`ferv39k_hf.clips.sampling`; this module holds the rest of the protocol, as read from
each codebase's FERV39k loader (see ``docs/sampling.md`` for the sources):

- ``dfer-clip`` (DFER-CLIP, ``dataloader/video_dataloader.py``): 224 x 224. Training
  rotates the whole clip by one angle uniform in [-4, 4] degrees (PIL's
  ``Image.rotate``: nearest neighbour, corners black), takes one random resized
  crop (area fraction uniform in [0.08, 1], aspect uniform in [3/4, 4/3], width
  and height swapped with probability 1/2) and flips with probability 1/2. Test:
  one view, every frame resized whole to 224 x 224. Pixels stay in [0, 1] (the
  loader does not normalise; CLIP's image encoder takes them as they are).
- ``mae-dfer`` (MAE-DFER, ``kinetics.py``'s ``VideoClsDatasetFrame``): 160 x 160.
  Every frame is first resized whole to 160 x 160; training then takes a random
  resized crop of that (area fraction in [0.08, 1], aspect log-uniform in
  [0.75, 1.3333], torchvision's rule) and flips with probability 1/2. Test: 2
  temporal x 2 spatial views, the spatial views identical (the frame is square).
  Normalisation: ImageNet's mean and std.
  MAE-DFER also trains with RandAugment, random erasing, mixup/cutmix and label
  smoothing; this package does not reproduce those (``docs/sampling.md``).

Geometry is reproduced exactly; pixels are resampled once from the source frame
(crop and resize in one step), where the codebases may resize twice.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Dict, List, Optional, Tuple

import numpy as np

from ferv39k_hf.clips.geometry import random_resized_box

__all__ = ["ClipPreset", "CLIP_PRESETS", "get_preset", "dfer_clip_box", "rotate_frames"]

Box = Tuple[int, int, int, int]  # x0, y0, x1, y1 in source pixels


@dataclasses.dataclass(frozen=True)
class ClipPreset:
    """One codebase's clip protocol besides its frame indices.

    Attributes:
        name: the ``sampling=`` name.
        size: output height and width.
        temporal_views, spatial_views: the codebase's test views.
        crop: ``"dfer-clip"`` (:func:`dfer_clip_box` on the source frame) or
            ``"torchvision"`` (torchvision's RandomResizedCrop rule, drawn on the frame
            resized to ``size`` x ``size`` first).
        scale, ratio: the random resized crop's area fraction and aspect ranges.
        rotation: the largest training rotation in degrees (0: none).
        mean, std: the normalisation of [0, 1] pixels the codebase's loader applies.
        flip_prob: the training flip probability.
    """

    name: str
    size: int
    temporal_views: int
    spatial_views: int
    crop: str
    scale: Tuple[float, float]
    ratio: Tuple[float, float]
    rotation: float
    mean: Tuple[float, float, float]
    std: Tuple[float, float, float]
    flip_prob: float = 0.5

    def train_box(
        self, height: int, width: int, rng: np.random.Generator,
        scale: Optional[Tuple[float, float]] = None, ratio: Optional[Tuple[float, float]] = None,
    ) -> Box:
        """A training crop box in the pixels of a ``height`` x ``width`` frame.

        Example::

            >>> x0, y0, x1, y1 = get_preset("mae-dfer").train_box(224, 224, np.random.default_rng(0))
            >>> 0 <= x0 < x1 <= 224 and 0 <= y0 < y1 <= 224
            True
        """
        scale, ratio = scale or self.scale, ratio or self.ratio
        if self.crop == "dfer-clip":
            return dfer_clip_box(height, width, rng, self.size, scale, ratio)
        x0, y0, x1, y1 = random_resized_box(self.size, self.size, rng, scale, ratio)
        sy, sx = height / self.size, width / self.size  # from the resized square back to the source
        x0, x1 = int(round(x0 * sx)), max(int(round(x1 * sx)), int(round(x0 * sx)) + 1)
        y0, y1 = int(round(y0 * sy)), max(int(round(y1 * sy)), int(round(y0 * sy)) + 1)
        return min(x0, width - 1), min(y0, height - 1), min(x1, width), min(y1, height)

    def test_boxes(self, height: int, width: int, spatial_views: int) -> List[Box]:
        """Every test view resizes the whole frame to ``size`` x ``size`` (both codebases
        do so before any crop, so their spatial views coincide)."""
        return [(0, 0, int(width), int(height))] * int(spatial_views)


CLIP_PRESETS: Dict[str, ClipPreset] = {
    "dfer-clip": ClipPreset("dfer-clip", size=224, temporal_views=1, spatial_views=1, crop="dfer-clip",
                            scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), rotation=4.0,
                            mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)),
    "mae-dfer": ClipPreset("mae-dfer", size=160, temporal_views=2, spatial_views=2, crop="torchvision",
                           scale=(0.08, 1.0), ratio=(0.75, 1.3333), rotation=0.0,
                           mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)),
}


def get_preset(name: str) -> Optional[ClipPreset]:
    """The :class:`ClipPreset` named ``name``, or None for the package's own samplers
    (``"segment"``, ``"window"``).

    Example::

        >>> get_preset("mae-dfer").size, get_preset("segment")
        (160, None)
    """
    return CLIP_PRESETS.get(name)


def dfer_clip_box(
    height: int, width: int, rng: np.random.Generator, size: int = 224,
    scale: Tuple[float, float] = (0.08, 1.0), ratio: Tuple[float, float] = (3 / 4, 4 / 3),
) -> Box:
    """DFER-CLIP's ``GroupRandomSizedCrop`` box on a ``height`` x ``width`` frame.

    Up to 10 tries: area fraction uniform in ``scale``, aspect uniform (not
    log-uniform) in ``ratio``, width and height swapped with probability 1/2, kept
    when it fits, its corner uniform over the positions where it fits. When no try
    fits: the square of the short side at a uniform position along the long side
    (the codebase resizes the short side to ``size`` and crops ``size`` x ``size``).

    Example::

        >>> dfer_clip_box(224, 224, np.random.default_rng(0))[2] <= 224
        True
    """
    area = height * width
    for _ in range(10):
        target_area = rng.uniform(scale[0], scale[1]) * area
        aspect = rng.uniform(ratio[0], ratio[1])
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if rng.random() < 0.5:
            w, h = h, w
        if 0 < w <= width and 0 < h <= height:
            x0 = int(rng.integers(0, width - w + 1))
            y0 = int(rng.integers(0, height - h + 1))
            return x0, y0, x0 + w, y0 + h
    side = min(height, width)
    scaled_long = int(size * max(height, width) / side)  # torchvision's Resize(size) of the long side
    offset = int(round(int(rng.integers(0, scaled_long - size + 1)) * side / size))
    offset = min(offset, max(height, width) - side)
    if width >= height:
        return offset, 0, offset + side, side
    return 0, offset, side, offset + side


def rotate_frames(frames: np.ndarray, angle: float, out: Optional[np.ndarray] = None) -> np.ndarray:
    """Every frame of ``frames`` (N, H, W, 3) uint8 rotated by ``angle`` degrees counter-clockwise
    about its centre, as PIL's ``Image.rotate(angle)`` does (nearest neighbour, same size, black
    corners). Writes into ``out`` (which may be ``frames``) when given; returns the rotated frames.

    Example::

        >>> frames = np.zeros((2, 8, 8, 3), np.uint8)
        >>> rotate_frames(frames, 3.0).shape
        (2, 8, 8, 3)
    """
    from PIL import Image

    out = np.empty_like(frames) if out is None else out
    for k in range(len(frames)):
        out[k] = np.asarray(Image.fromarray(np.ascontiguousarray(frames[k])).rotate(float(angle)))
    return out
