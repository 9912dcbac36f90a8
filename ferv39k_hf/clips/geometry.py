"""Crop geometry and normalisation: random resized and short-side boxes, the torch resize, the C kernel's presence."""

from __future__ import annotations

import math
from typing import List, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

try:  # the optional C extension (setup.py); without it the torch path runs
    from ferv39k_hf.clips import ckernel as _kernel
except ImportError:  # pragma: no cover - depends on the install
    _kernel = None


def fused_kernel_available() -> bool:
    """Whether the C extension that crops, resizes, flips and normalises in one pass was built.

    Returns:
        True when ``ferv39k_hf.clips.ckernel`` imported (pip compiled it at install, which
        needs a C compiler); False means :class:`VideoClipTransform` runs the same
        steps as torch operations, to within one grey level of the kernel.

    Example::

        if not ferv39k_hf.fused_kernel_available():
            print("no C kernel: reinstall where gcc or clang is on the PATH")
    """
    return _kernel is not None


def fused_kernel():
    """The C extension module, or None where it was not built (see :func:`fused_kernel_available`)."""
    return _kernel


# VideoMAE's image processor normalises with the ImageNet statistics.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Box = Tuple[int, int, int, int]  # x0, y0, x1, y1 in source pixels


# --- crops ------------------------------------------------------------------------------------------


def random_resized_box(
    height: int, width: int, rng: np.random.Generator, scale: Tuple[float, float], ratio: Tuple[float, float]
) -> Box:
    """torchvision's RandomResizedCrop box: area fraction in ``scale``, aspect in ``ratio``."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_ratio[0], log_ratio[1]))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            y0 = int(rng.integers(0, height - h + 1))
            x0 = int(rng.integers(0, width - w + 1))
            return x0, y0, x0 + w, y0 + h
    in_ratio = width / height  # fallback: the centre crop of the closest allowed aspect
    w, h = width, height
    if in_ratio < min(ratio):
        h = int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        w = int(round(height * max(ratio)))
    x0, y0 = (width - w) // 2, (height - h) // 2
    return x0, y0, x0 + w, y0 + h


def short_side_boxes(height: int, width: int, num_views: int) -> List[Box]:
    """Square boxes of the short side, spread along the long side (one view: centred).

    Resizing such a box to ``size`` equals VideoMAE's evaluation: resize the
    short side to ``size``, then take centre (or spread) crops of ``size``.
    """
    side = min(height, width)
    if num_views == 1:
        offsets = [(max(height, width) - side) // 2]
    else:
        offsets = np.round(np.linspace(0, max(height, width) - side, num_views)).astype(int).tolist()
    if width >= height:
        return [(o, 0, o + side, side) for o in offsets]
    return [(0, o, side, o + side) for o in offsets]


def scale_box(box: Box, sy: float, sx: float, height: int, width: int) -> Box:
    """``box`` scaled by ``sy``, ``sx`` into a (height, width) frame, at least one pixel each way."""
    x0, y0, x1, y1 = box
    x0, x1 = min(int(round(x0 * sx)), width - 1), min(max(int(round(x1 * sx)), 1), width)
    y0, y1 = min(int(round(y0 * sy)), height - 1), min(max(int(round(y1 * sy)), 1), height)
    return x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)


def crop_resize(frames: torch.Tensor, box: Box, size: int) -> torch.Tensor:
    """Crop ``box`` of every frame of ``frames`` (N, H, W, 3) uint8 and resize it to (N, size, size, 3).

    A crop that already has the size is returned as a view (no copy). Resizing is
    torch's uint8 antialiased bilinear on the whole clip at once (its SIMD path
    works on interleaved pixels), and the result is C-contiguous.
    """
    x0, y0, x1, y1 = box
    crop = frames[:, y0:y1, x0:x1]
    if crop.shape[1:3] == (size, size):
        return crop
    resized = F.interpolate(crop.permute(0, 3, 1, 2), size=(size, size), mode="bilinear", antialias=True,
                            align_corners=False).permute(0, 2, 3, 1)
    return resized if resized.is_contiguous() else resized.contiguous()


def channel_scale_bias(mean: Sequence[float], std: Sequence[float]) -> Tuple[List[float], List[float]]:
    """Per-channel ``scale`` and ``bias`` with ``(x / 255 - mean) / std == x * scale + bias``."""
    return [1.0 / (255.0 * s) for s in std], [-m / s for m, s in zip(mean, std)]


class Normaliser:
    """uint8 (H, W, 3) frames -> float32 ``(x / 255 - mean) / std``, written once into the output.

    One ``addcmul`` per frame reads the interleaved uint8 pixels and writes the
    float result straight into its place in the batch: the batch (10 MB per
    16-frame clip at 224) is written to memory once and never read back. With
    ``channels_last`` the output frame keeps the decoder's interleaved layout, so
    a frame is one (H, 3W) row block and the per-channel constants are a row of
    3W values; otherwise the frame is transposed to planar (3, H, W) on the way.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], size: int, channels_last: bool):
        self.channel_scale, self.channel_bias = channel_scale_bias(mean, std)  # for the C kernel
        scale = torch.tensor(self.channel_scale, dtype=torch.float32)
        bias = torch.tensor(self.channel_bias, dtype=torch.float32)
        self.size, self.channels_last = size, channels_last
        if channels_last:
            self.scale, self.bias = scale.repeat(size), bias.repeat(size)
        else:
            self.scale, self.bias = scale.view(3, 1, 1), bias.view(3, 1, 1)

    def frame_shape(self) -> Tuple[int, int, int]:
        """The memory shape of one output frame."""
        size = self.size
        return (size, size, 3) if self.channels_last else (3, size, size)

    def __call__(self, frame: torch.Tensor, out: torch.Tensor) -> None:
        """``frame``: (S, S, 3) uint8; ``out``: one output frame of :meth:`frame_shape`, float32."""
        if self.channels_last:
            width = 3 * self.size
            torch.addcmul(self.bias, frame.reshape(self.size, width), self.scale, out=out.view(self.size, width))
        else:
            torch.addcmul(self.bias, frame.permute(2, 0, 1), self.scale, out=out)
