"""Rows of the FERV39k datasets -> normalised clip tensors for video transformers.

:class:`VideoClipTransform` is a callable for ``Dataset.with_transform``. For every
row it picks the frame indices first (:mod:`ferv39k_hf.sampling`), decodes only
those frames (:mod:`ferv39k_hf.video`), applies one crop, resize and flip to the
whole clip in uint8, and writes each frame normalised to float32 straight into
its place in the batch:

    ds = ferv39k_hf.undecoded_frames(load_dataset("ferv39k"))
    train = ds["train"].with_transform(VideoClipTransform(train=True, seed=0))
    test = ds["test"].with_transform(VideoClipTransform(train=False))
    loader = DataLoader(train, batch_size=8, collate_fn=collate_clips)

Frames may come as undecoded ``{"bytes", "path"}`` dicts (the fast path), as PIL
images, or as path-only dicts (a ``--frames reference`` build); rows of the
``videos`` config (``video`` = mp4 bytes) are decoded with PyAV. JPEG bytes are
decoded by simplejpeg when it is installed, else by Pillow; both give the same
pixels.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from . import _shared_batches
from ._main_batches import BatchPool
from .clip_presets import get_preset, rotate_frames
from .sampling import SAMPLINGS, sample_indices, sample_views
from .video import FrameListClip, Mp4Clip, Scratch, simplejpeg_available

try:  # the optional C extension (setup.py); without it the torch path runs
    from . import _fused
except ImportError:  # pragma: no cover - depends on the install
    _fused = None


def fused_kernel_available() -> bool:
    """Whether the C extension that crops, resizes, flips and normalises in one pass was built.

    Returns:
        True when ``ferv39k_hf._fused`` imported (pip compiled it at install, which
        needs a C compiler); False means :class:`VideoClipTransform` runs the same
        steps as torch operations, to within one grey level of the kernel.

    Example::

        if not ferv39k_hf.fused_kernel_available():
            print("no C kernel: reinstall where gcc or clang is on the PATH")
    """
    return _fused is not None


__all__ = ["VideoClipTransform", "DeviceFinish", "undecoded_frames", "collate_clips", "IMAGENET_MEAN", "IMAGENET_STD"]

# VideoMAE's image processor normalises with the ImageNet statistics.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Box = Tuple[int, int, int, int]  # x0, y0, x1, y1 in source pixels


def _row_sources(batch: Dict[str, List[Any]], use_simplejpeg: bool) -> List[Any]:
    ids = batch.get("clip_id")
    if "frames" in batch:
        frames = batch["frames"]
        return [FrameListClip(f, use_simplejpeg, ids[i] if ids else f"#{i}") for i, f in enumerate(frames)]
    if "video" in batch:
        counts = batch.get("num_frames") or [None] * len(batch["video"])
        return [Mp4Clip(v, counts[i], ids[i] if ids else f"#{i}") for i, v in enumerate(batch["video"])]
    raise ValueError(f"a batch needs a 'frames' or a 'video' column; got columns {sorted(batch)}")


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


def _scale_box(box: Box, sy: float, sx: float, height: int, width: int) -> Box:
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


def _channel_scale_bias(mean: Sequence[float], std: Sequence[float]) -> Tuple[List[float], List[float]]:
    """Per-channel ``scale`` and ``bias`` with ``(x / 255 - mean) / std == x * scale + bias``."""
    return [1.0 / (255.0 * s) for s in std], [-m / s for m, s in zip(mean, std)]


class _Normaliser:
    """uint8 (H, W, 3) frames -> float32 ``(x / 255 - mean) / std``, written once into the output.

    One ``addcmul`` per frame reads the interleaved uint8 pixels and writes the
    float result straight into its place in the batch: the batch (10 MB per
    16-frame clip at 224) is written to memory once and never read back. With
    ``channels_last`` the output frame keeps the decoder's interleaved layout, so
    a frame is one (H, 3W) row block and the per-channel constants are a row of
    3W values; otherwise the frame is transposed to planar (3, H, W) on the way.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], size: int, channels_last: bool):
        self.channel_scale, self.channel_bias = _channel_scale_bias(mean, std)  # for the C kernel
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


# --- the transform ----------------------------------------------------------------------------------


def _worker_id() -> int:
    info = torch.utils.data.get_worker_info()
    return -1 if info is None else int(info.id)


class VideoClipTransform:
    """Batch of dataset rows -> ``{"pixel_values": (B, T, 3, S, S) float32, "labels": (B,) int64}``.

    Args:
        num_frames: frames per clip (T).
        size: output height and width (S); default the preset's (224 for
            ``"dfer-clip"``, 160 for ``"mae-dfer"``), else 224.
        train: training draws a random temporal sample, a random resized crop and a
            horizontal flip per clip (the same for all its frames); evaluation takes
            the centre sample and VideoMAE's resize-short-side-then-centre-crop.
        sampling: ``"segment"`` (T equal segments over the whole clip, TSN) or
            ``"window"`` (T consecutive frames), the package's samplers; or a preset
            that reproduces a codebase's clip protocol: ``"dfer-clip"`` or
            ``"mae-dfer"`` (frame indices, size, test views, crop rule, rotation and
            flip; evaluation resizes each whole frame, as both do). See
            :mod:`ferv39k_hf.sampling`, :mod:`ferv39k_hf.clip_presets` and
            docs/sampling.md.
        mean, std: per-channel normalisation of [0, 1] pixels; default the preset's
            (``"dfer-clip"``: none, mean 0 and std 1, as its loader feeds CLIP [0, 1]
            pixels; ``"mae-dfer"``: ImageNet), else ImageNet's, as VideoMAE.
        seed: ``None`` follows torch's random state (seeded per DataLoader worker by
            torch, and by ``transformers.set_seed``); an int gives a stream of its own
            per (seed, epoch, DataLoader worker): the same seed gives the same batches
            run to run, and workers never share a stream. Call :meth:`set_epoch` each
            epoch to vary it across epochs.
        scale, ratio, flip_prob: the random resized crop's area fraction and aspect
            range, and the flip probability (training only); default the preset's,
            else (0.6, 1.0), (3/4, 4/3) and 0.5.
        rotation: the largest random rotation of a training clip, in degrees (one
            angle per clip, uniform in [-rotation, rotation]); default the preset's
            (4 for ``"dfer-clip"``), else 0.
        stride: frame step of ``"window"`` sampling.
        temporal_views, spatial_views: evaluation views per clip (default the
            preset's test views: 2 x 2 for ``"mae-dfer"``, else 1); with more than one,
            calls return ``B * V`` clips in clip-major order and ``view_clip_index``.
            Apply multi-view transforms to batches (slices, or in a collate function
            as examples/run_video_classification.py does): ``ds[i]`` on a dataset
            with this as its ``with_transform`` unpacks a one-row batch and so keeps
            only the first view.
        dct_scaling: let the JPEG decoder downscale by 2, 4 or 8 when the crop is at
            least that much larger than ``size`` (e.g. 112 from 224-pixel frames).
        decoder: ``"auto"`` (simplejpeg when installed), ``"simplejpeg"`` or ``"pil"``.
        channels_last: ``pixel_values`` always has the shape (B, T, 3, S, S) that
            the video models take. By default its memory is ordered (B, T, S, S, 3),
            each frame's pixels interleaved as the decoder wrote them (what torch
            calls channels last), which saves a transposing pass over every frame.
            transformers' VideoMAE and TimeSformer take it as it is (VideoMAE's
            patch embedding receives it as a ``channels_last_3d`` tensor), and
            ``.to(device)``, pinning and DataLoader workers keep the layout; only
            ``.view`` needs ``.contiguous()`` first. False gives contiguous memory,
            at about one more pass over the uint8 pixels.
        on_device: stop after decoding and leave crop, resize, flip and
            normalisation to :class:`DeviceFinish` (see there) on the GPU: the
            CPU then does little more than decode the sampled JPEGs, and uint8
            frames cross to the GPU instead of float32 clips. All frames of a batch must
            have one size (true of the faces config).
        fused: crop, resize, flip and normalise in one pass of the package's C
            extension (``ferv39k_hf._fused``, built at install where a C compiler is
            found) instead of three torch operations, which is faster whenever a
            clip is resized or mirrored (see docs/performance.md). Its
            resize is the same antialiased bilinear filter computed in float rather
            than torch's 8-bit fixed point, so the two paths differ by at most one
            grey level. ``None`` (default) uses it when built and ``channels_last``
            is on; True insists on it; False keeps the torch path.
        reuse_memory: reuse decode scratch and batch memory from batch to batch,
            each only once the package knows it is free (see docs/design.md). False,
            or ``FERV39K_HF_REUSE_MEMORY=0`` in the environment, gives every batch
            memory of its own.

    Returns:
        Calling the transform on a batch of rows (a dict of columns, as
        ``with_transform`` passes it; the rows need ``frames`` or ``video``, and
        ``label`` for ``labels``) returns ``pixel_values``: float32 (B, T, 3, S, S),
        or with ``on_device`` uint8 (B, T, H, W, 3) frames plus ``crop_boxes``
        (B, 4) int64 and ``flips`` (B,) bool; ``labels``: int64 (B,); and, with
        several views, ``view_clip_index`` (see :meth:`views`).

    Raises:
        ValueError: a bad argument, or a batch without ``frames`` or ``video``.
        ImportError: ``decoder="simplejpeg"`` or ``fused=True`` where that is not installed.

    Example::

        ds = ferv39k_hf.undecoded_frames(datasets.load_dataset("ferv39k"))
        train = ds["train"].with_transform(VideoClipTransform(num_frames=16, size=224, train=True, seed=0))
        batch = ferv39k_hf.collate_clips([train[0], train[1]])
        batch["pixel_values"].shape        # torch.Size([2, 16, 3, 224, 224]), float32
    """

    def __init__(
        self,
        num_frames: int = 16,
        size: Optional[int] = None,
        train: bool = True,
        sampling: str = "segment",
        mean: Optional[Sequence[float]] = None,
        std: Optional[Sequence[float]] = None,
        seed: Optional[int] = None,
        *,
        scale: Optional[Tuple[float, float]] = None,
        ratio: Optional[Tuple[float, float]] = None,
        flip_prob: Optional[float] = None,
        rotation: Optional[float] = None,
        stride: int = 1,
        temporal_views: Optional[int] = None,
        spatial_views: Optional[int] = None,
        dct_scaling: bool = True,
        decoder: str = "auto",
        channels_last: bool = True,
        on_device: bool = False,
        fused: Optional[bool] = None,
        reuse_memory: bool = True,
    ):
        if sampling not in SAMPLINGS:
            raise ValueError(f"sampling must be one of {SAMPLINGS}, got {sampling!r}")
        self.preset = preset = get_preset(sampling)
        size = (preset.size if preset else 224) if size is None else size
        scale = (preset.scale if preset else (0.6, 1.0)) if scale is None else scale
        ratio = (preset.ratio if preset else (3 / 4, 4 / 3)) if ratio is None else ratio
        flip_prob = (preset.flip_prob if preset else 0.5) if flip_prob is None else flip_prob
        rotation = (preset.rotation if preset else 0.0) if rotation is None else rotation
        mean = (preset.mean if preset else IMAGENET_MEAN) if mean is None else mean
        std = (preset.std if preset else IMAGENET_STD) if std is None else std
        if temporal_views is None:
            temporal_views = preset.temporal_views if preset and not train else 1
        if spatial_views is None:
            spatial_views = preset.spatial_views if preset and not train else 1
        if rotation < 0:
            raise ValueError(f"rotation is the largest angle in degrees, >= 0; got {rotation}")
        if sampling == "dfer-clip" and temporal_views > 1:
            raise ValueError(f"the dfer-clip preset tests one temporal view (as DFER-CLIP does), got {temporal_views}")
        if num_frames < 1 or size < 1:
            raise ValueError(f"num_frames and size must be positive, got {num_frames} and {size}")
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"mean and std need 3 values, std positive; got {mean} and {std}")
        if train and (temporal_views > 1 or spatial_views > 1):
            raise ValueError("multiple views are for evaluation: pass train=False")
        if decoder not in ("auto", "simplejpeg", "pil"):
            raise ValueError(f"decoder must be 'auto', 'simplejpeg' or 'pil', got {decoder!r}")
        if decoder == "simplejpeg" and not simplejpeg_available():
            raise ImportError("decoder='simplejpeg' needs simplejpeg: pip install 'ferv39k-hf[fast]'")
        self.num_frames, self.size, self.train, self.sampling = int(num_frames), int(size), bool(train), sampling
        self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
        self.seed, self.scale, self.ratio, self.flip_prob = seed, tuple(scale), tuple(ratio), float(flip_prob)
        self.rotation = float(rotation)
        self.stride, self.dct_scaling = int(stride), bool(dct_scaling)
        self.temporal_views, self.spatial_views = int(temporal_views), int(spatial_views)
        self.use_simplejpeg = simplejpeg_available() and decoder != "pil"
        self.channels_last, self.on_device = bool(channels_last), bool(on_device)
        if fused and _fused is None:
            raise ImportError("fused=True needs the C extension ferv39k_hf._fused, which this install lacks: "
                              "reinstall the package where a C compiler (gcc or clang) is on the PATH")
        if fused and not self.channels_last:
            raise ValueError("fused=True writes channels-last frames: it needs channels_last=True")
        self.fused = _fused is not None and self.channels_last if fused is None else bool(fused)
        self._normaliser = _Normaliser(self.mean, self.std, self.size, self.channels_last)
        self.epoch = 0
        self._rng_key: Optional[Tuple[int, int, int]] = None
        self._generator: Optional[np.random.Generator] = None
        self.reuse_memory = bool(reuse_memory)
        self._scratch, self._batches = Scratch(self.reuse_memory), BatchPool()  # neither is pickled with its memory

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(num_frames={self.num_frames}, size={self.size}, train={self.train}, "
            f"sampling={self.sampling!r}, seed={self.seed}, views={self.temporal_views}x{self.spatial_views}, "
            f"channels_last={self.channels_last}, on_device={self.on_device}, fused={self.fused})"
        )

    def set_epoch(self, epoch: int) -> None:
        """Start the seeded random stream of ``epoch`` (no effect when ``seed`` is None)."""
        self.epoch = int(epoch)

    def _rng(self) -> np.random.Generator:
        if self.seed is None:
            # torch's generator is what DataLoader seeds per worker and per epoch
            return np.random.default_rng(int(torch.randint(0, 2**62, ()).item()))
        key = (os.getpid(), _worker_id(), self.epoch)
        if key != self._rng_key:
            entropy = [int(self.seed), self.epoch, key[1] + 1]
            self._generator, self._rng_key = np.random.default_rng(np.random.SeedSequence(entropy)), key
        return self._generator

    def __call__(self, batch: Dict[str, List[Any]]) -> Dict[str, torch.Tensor]:
        """The clips of ``batch`` (a dict of equal-length column lists), with this transform's views;
        see the class's Returns."""
        return self.views(batch, self.temporal_views, self.spatial_views)

    def views(
        self, batch: Dict[str, List[Any]], temporal_views: int = 2, spatial_views: int = 2
    ) -> Dict[str, torch.Tensor]:
        """``temporal_views`` x ``spatial_views`` evaluation views of every clip of ``batch``.

        Returns ``pixel_values`` (B * V, T, 3, S, S) with the V views of clip b at
        rows ``b * V ... b * V + V - 1`` (temporal-major), ``labels`` repeated per
        view, and ``view_clip_index`` (B * V,) giving each row's clip in the batch,
        so per-view scores can be averaged per clip. With one view of each kind
        this is the plain transform and ``view_clip_index`` is left out.
        """
        temporal_views, spatial_views = int(temporal_views), int(spatial_views)
        if min(temporal_views, spatial_views) < 1:
            raise ValueError(f"view counts must be >= 1, got {temporal_views} x {spatial_views}")
        multi = temporal_views * spatial_views > 1
        if multi and self.train:
            raise ValueError("multiple views are for evaluation: use a transform with train=False")
        sources = _row_sources(batch, self.use_simplejpeg)
        per_clip = temporal_views * spatial_views
        rng = self._rng() if self.train else None
        plans = [self._plan(source, rng, temporal_views, spatial_views) for source in sources]
        if self.on_device:
            result = self._deferred_views(plans, spatial_views)
        else:
            memory = self._output_tensor((len(sources) * per_clip, self.num_frames) + self._normaliser.frame_shape())
            for row, plan in enumerate(plans):
                self._clip_into(plan, spatial_views, memory[row * per_clip : (row + 1) * per_clip])
            result = {"pixel_values": memory.permute(0, 1, 4, 2, 3) if self.channels_last else memory}
        labels = batch.get("label", batch.get("labels"))
        if labels is not None:
            result["labels"] = torch.as_tensor(labels, dtype=torch.int64).repeat_interleave(per_clip)
        if multi:
            result["view_clip_index"] = torch.arange(len(sources)).repeat_interleave(per_clip)
        return result

    def _indices(self, num_frames: int, rng: Optional[np.random.Generator], views: int) -> np.ndarray:
        if views > 1:
            return sample_views(self.sampling, num_frames, self.num_frames, views, stride=self.stride)
        return sample_indices(self.sampling, num_frames, self.num_frames, self.train, rng, self.stride)[None]

    def _boxes(self, height: int, width: int, rng: Optional[np.random.Generator], views: int) -> List[Box]:
        if self.preset is not None:
            if self.train:
                return [self.preset.train_box(height, width, rng, self.scale, self.ratio)]
            return self.preset.test_boxes(height, width, views)
        if self.train:
            return [random_resized_box(height, width, rng, self.scale, self.ratio)]
        return short_side_boxes(height, width, views)

    def _reduction(self, boxes: List[Box]) -> int:
        """The largest JPEG DCT downscale (1, 2, 4, 8) that still leaves every crop >= size."""
        if not self.dct_scaling:
            return 1
        smallest = min(min(x1 - x0, y1 - y0) for x0, y0, x1, y1 in boxes)
        reduce = 1
        while reduce < 8 and smallest >= 2 * reduce * self.size:
            reduce *= 2
        return reduce

    def _plan(self, source: Any, rng, temporal_views: int, spatial_views: int) -> "_ClipPlan":
        """Draw one row's sample, boxes and flip, and pick the decoder's downscale (no pixels decoded,
        except for videos, whose frame size is known only once decoded)."""
        index_sets = self._indices(source.num_frames, rng, temporal_views)
        unique, positions = np.unique(index_sets, return_inverse=True)
        source_size, can_reduce = source.probe(int(unique[0]))
        frames = None
        if source_size is None:  # kept in the plan until the batch is made: new memory, never scratch
            frames = source.decode(unique, 1)
            source_size = frames.shape[1:3]
        boxes = self._boxes(source_size[0], source_size[1], rng, spatial_views)
        flip = bool(self.train and rng.random() < self.flip_prob)
        angle = float(rng.uniform(-self.rotation, self.rotation)) if self.train and self.rotation > 0 else 0.0
        reduce = self._reduction(boxes) if can_reduce else 1
        return _ClipPlan(source, unique, positions.reshape(index_sets.shape).tolist(), tuple(source_size), boxes,
                         flip, reduce, frames, angle)

    def _clip_into(self, plan: "_ClipPlan", spatial_views: int, out: torch.Tensor) -> None:
        """Decode, crop, resize and normalise one row's views into ``out`` (V, T, frame memory).

        Each distinct sampled frame is decoded once, and resized once per spatial
        view however many temporal views share it.
        """
        frames = plan.frames if plan.frames is not None else plan.source.decode(plan.unique, plan.reduce,
                                                                                 self._scratch)
        if plan.angle:  # before the crop, as DFER-CLIP rotates whole frames
            frames = rotate_frames(frames, plan.angle)
        height, width = frames.shape[1:3]
        fused = self.fused and frames.flags.c_contiguous
        pixels = torch.from_numpy(frames)
        for s, box in enumerate(plan.boxes_for(height, width)):
            if fused and (plan.flip or (box[2] - box[0], box[3] - box[1]) != (self.size, self.size)
                          or _fused.simd()):
                # one pass per output frame; without the kernel's AVX2 passes, a crop that needs
                # neither resize nor flip is faster as the torch path's single normalising pass
                norm = self._normaliser
                for t, frame_positions in enumerate(plan.positions):
                    _fused.crop_resize_normalise(frames, frames.shape[:3], frame_positions, box, plan.flip, self.size,
                                                 norm.channel_scale, norm.channel_bias,
                                                 out[t * spatial_views + s].numpy())
                continue
            clip = crop_resize(pixels, box, self.size)
            if plan.flip:
                clip = clip.flip(2)
            for t, frame_positions in enumerate(plan.positions):
                view = out[t * spatial_views + s]
                for k, position in enumerate(frame_positions):
                    self._normaliser(clip[position], view[k])

    def _deferred_views(self, plans: List["_ClipPlan"], spatial_views: int) -> Dict[str, torch.Tensor]:
        """``on_device``: the sampled frames as uint8, with each view's box and flip (see :class:`DeviceFinish`)."""
        reduce = min(plan.reduce for plan in plans)  # one frame size for the whole batch
        sizes = {plan.source_size for plan in plans}
        if len(sizes) > 1:
            clips = ", ".join(f"{plan.source.clip} {plan.source_size[0]}x{plan.source_size[1]}" for plan in plans)
            raise ValueError(f"on_device needs one frame size in a batch (the faces config has it); got {clips}")
        source_height, source_width = sizes.pop()
        height, width = -(-source_height // reduce), -(-source_width // reduce)
        per_clip = len(plans[0].positions) * spatial_views
        frames_out = self._output_tensor((len(plans) * per_clip, self.num_frames, height, width, 3), torch.uint8)
        boxes = torch.empty((len(plans) * per_clip, 4), dtype=torch.int64)
        flips = torch.empty(len(plans) * per_clip, dtype=torch.bool)
        for row, plan in enumerate(plans):
            rows = frames_out[row * per_clip : (row + 1) * per_clip].numpy()
            direct = per_clip == 1 and plan.frames is None and plan.positions[0] == list(range(len(plan.unique)))
            if direct:  # the common case: decode straight into the batch
                plan.source.decode(plan.unique, reduce, out=rows[0])
            else:
                frames = plan.frames if plan.frames is not None else plan.source.decode(plan.unique, reduce,
                                                                                         self._scratch)
                if frames.shape[1:3] != (height, width):
                    raise ValueError(f"clip {plan.source.clip}: frames of {frames.shape[1]}x{frames.shape[2]} "
                                     f"in a batch of {height}x{width} (on_device needs one size per batch)")
                for t, frame_positions in enumerate(plan.positions):
                    for s in range(spatial_views):
                        np.take(frames, frame_positions, axis=0, out=rows[t * spatial_views + s])
            if plan.angle:  # training has one view: rotate the batch's frames in place
                rotate_frames(rows[0], plan.angle, out=rows[0])
            for s, box in enumerate(plan.boxes_for(height, width)):
                for t in range(len(plan.positions)):
                    boxes[row * per_clip + t * spatial_views + s] = torch.tensor(box)
            flips[row * per_clip : (row + 1) * per_clip] = plan.flip
        return {"pixel_values": frames_out, "crop_boxes": boxes, "flips": flips}

    def _output_tensor(self, shape: Tuple[int, ...], dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Memory for a batch. In a DataLoader worker: shared memory, which is sent to the main process
        without a copy (a buffer the worker reuses once both sides are done with it, see
        :mod:`ferv39k_hf._shared_batches`, else new, as torch's default_collate allocates). Elsewhere: an
        array that this transform reuses once torch has freed its last batch (:mod:`ferv39k_hf._main_batches`)."""
        if torch.utils.data.get_worker_info() is None:
            return self._batches.tensor(shape, dtype, self.reuse_memory)
        reused = _shared_batches.batch_tensor(shape, dtype) if self.reuse_memory else None
        if reused is not None:
            return reused
        if _shared_batches.new_shared_works():
            try:
                return _shared_batches.shared_tensor(math.prod(shape), dtype).view(shape)
            except (AttributeError, RuntimeError):  # private torch API: an ordinary tensor still works
                pass
        return torch.empty(shape, dtype=dtype)

    def device_finish(self) -> "DeviceFinish":
        """The :class:`DeviceFinish` that completes this transform's ``on_device`` batches."""
        return DeviceFinish(self.size, self.mean, self.std)


@dataclasses.dataclass
class _ClipPlan:
    """One row's draw: which frames (``unique``, and the ``positions`` in it of each temporal view's
    frames), the spatial views' boxes in source pixels, the flip and the decoder's downscale."""

    source: Any
    unique: np.ndarray
    positions: List[List[int]]
    source_size: Tuple[int, int]
    boxes: List[Box]
    flip: bool
    reduce: int
    frames: Optional[np.ndarray] = None  # already decoded (videos)
    angle: float = 0.0  # training rotation in degrees, applied to whole frames before the crop

    def boxes_for(self, height: int, width: int) -> List[Box]:
        """The boxes in the pixels of frames decoded at ``height`` x ``width``."""
        sy, sx = height / self.source_size[0], width / self.source_size[1]
        return [_scale_box(box, sy, sx, height, width) for box in self.boxes]


def _resize_weights(low: torch.Tensor, high: torch.Tensor, in_size: int, out_size: int) -> torch.Tensor:
    """(N, out_size, in_size) float32 rows that crop ``[low, high)`` of an axis and resize it to ``out_size``.

    Row ``i`` holds the antialiased bilinear (triangle) filter that torch's
    ``F.interpolate(..., mode="bilinear", antialias=True, align_corners=False)``
    applies for output pixel ``i``: centre ``scale * (i + 0.5)`` in the crop, width
    ``max(scale, 1)``, taps outside the crop dropped and the rest normalised to sum
    to one. Built from the box tensors with tensor operations only, so the shapes
    never depend on the boxes and nothing is read back to the host.
    """
    device = low.device
    length = (high - low).to(torch.float32)
    scale = length / out_size
    support = scale.clamp(min=1.0)
    centre = scale[:, None] * (torch.arange(out_size, device=device, dtype=torch.float32) + 0.5)
    taps = torch.arange(in_size, device=device)[None, :] - low[:, None]  # source pixel, from the crop's start
    distance = (taps[:, None, :].to(torch.float32) + 0.5 - centre[:, :, None]) / support[:, None, None]
    inside = (taps >= 0) & (taps < (high - low)[:, None])
    weights = (1.0 - distance.abs()).clamp(min=0.0) * inside[:, None, :]
    return weights / weights.sum(dim=-1, keepdim=True)


class DeviceFinish:
    """Crop, resize, flip and normalise ``on_device`` batches where they are: on the accelerator.

    A :class:`VideoClipTransform` made with ``on_device=True`` stops after
    decoding: its batches hold the sampled frames as uint8 ``pixel_values``
    (N, T, H, W, 3), each view's ``crop_boxes`` (N, 4: x0, y0, x1, y1 in those
    pixels) and ``flips`` (N,). Moved to the GPU (uint8: a quarter of the bytes
    of float32 clips of the frames' size), one call turns them into the usual
    (N, T, 3, S, S) ``pixel_values``, the crop resized in float with the same
    antialiased bilinear filter, so values match the CPU path's to within its
    uint8 rounding (one grey level).

    The whole batch is finished at once: each clip's crop, resize and flip is a
    pair of filter matrices built from the boxes on the device, applied with two
    batched matrix products, so there is no loop over clips, no shape that depends
    on a box and no read-back to the host. Under ``torch.compile`` (the Trainer's
    ``--torch_compile``), which traces the attached hook with the model, it is one
    graph without breaks whose shapes change only with the batch size (see
    docs/compile-and-sharding.md).

    :meth:`attach` does it inside a model's forward::

        train_tf = VideoClipTransform(train=True, on_device=True)
        finish = train_tf.device_finish()
        finish.attach(model)   # the Trainer's batches now finish on the model's device

    Args:
        size: output height and width S (the transform's ``size``).
        mean, std: per-channel normalisation of [0, 1] pixels, as the transform's.
    """

    def __init__(self, size: int, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        self.size = int(size)
        self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)

    def __call__(self, pixel_values: torch.Tensor, crop_boxes: torch.Tensor, flips: torch.Tensor,
                 dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """uint8 (N, T, H, W, 3) frames, (N, 4) boxes, (N,) flips -> (N, T, 3, S, S) ``dtype`` on their device.

        The arithmetic is float32 whatever ``dtype``; only the result is cast.
        """
        if pixel_values.dtype != torch.uint8 or pixel_values.dim() != 5 or pixel_values.shape[-1] != 3:
            raise ValueError(f"expected uint8 (N, T, H, W, 3) frames, got {tuple(pixel_values.shape)} "
                             f"{pixel_values.dtype}")
        device, size = pixel_values.device, self.size
        height, width = pixel_values.shape[2], pixel_values.shape[3]
        scale, bias = (torch.tensor(values, device=device).view(3, 1, 1)
                       for values in _channel_scale_bias(self.mean, self.std))
        boxes = crop_boxes.to(device=device, dtype=torch.int64)
        rows = _resize_weights(boxes[:, 1], boxes[:, 3], height, size)  # (N, S, H)
        columns = _resize_weights(boxes[:, 0], boxes[:, 2], width, size)  # (N, S, W)
        columns = torch.where(flips.to(device).view(-1, 1, 1), columns.flip(1), columns)  # mirror = reversed rows
        frames = pixel_values.permute(0, 1, 4, 2, 3).to(torch.float32)  # (N, T, 3, H, W), memory stays interleaved
        resized = rows[:, None, None] @ frames @ columns.transpose(1, 2)[:, None, None]
        return torch.addcmul(bias, resized, scale).to(dtype)

    def finish_inputs(self, inputs: Dict[str, Any], dtype: torch.dtype = torch.float32) -> Dict[str, Any]:
        """``inputs`` with ``on_device`` frames, boxes and flips replaced by finished ``pixel_values`` of ``dtype``."""
        if "crop_boxes" not in inputs:
            return inputs
        inputs = dict(inputs)
        inputs["pixel_values"] = self(inputs["pixel_values"], inputs.pop("crop_boxes"), inputs.pop("flips"), dtype)
        return inputs

    def attach(self, model: torch.nn.Module, dtype: Optional[torch.dtype] = None) -> Any:
        """Finish ``on_device`` batches at the start of every ``model(**batch)`` call (a forward pre-hook;
        other inputs pass unchanged). Returns the hook's handle: ``handle.remove()`` detaches it.

        ``dtype``: of the finished ``pixel_values``; None (default) takes, at each call, the dtype of the
        model's first floating-point parameter, which is the dtype it computes in: float32 for float32
        weights (also under autocast, which casts inside the model), bfloat16 for a bfloat16 model or
        DeepSpeed's bf16 engine, whose inputs nothing else casts.
        """

        def hook(module: torch.nn.Module, args: Tuple[Any, ...], kwargs: Dict[str, Any]):
            if "crop_boxes" not in kwargs:
                return None
            return args, self.finish_inputs(kwargs, dtype or _compute_dtype(module))

        return model.register_forward_pre_hook(hook, with_kwargs=True)


def _compute_dtype(module: torch.nn.Module) -> torch.dtype:
    """The dtype of ``module``'s first floating-point parameter (float32 if it has none)."""
    for parameter in module.parameters():
        if parameter.is_floating_point():
            return parameter.dtype
    return torch.float32


def collate_clips(examples: List[Dict[str, Any]]) -> Dict[str, Any]:
    """DataLoader / Trainer collate for rows made by :class:`VideoClipTransform`.

    ``datasets`` hands a transformed batch to the DataLoader split into per-row
    views; when those are the consecutive rows of one tensor (as for any
    ``with_transform`` dataset read in batches, views included), the batch is that
    tensor again instead of a stacked copy, which for 16-frame clips at 224 costs
    10 MB of freshly faulted memory per clip (in a worker, the transform already
    wrote the batch to shared memory). Anything else goes to torch's ``default_collate``.

    In a DataLoader worker the batch is returned as a dict that, once sent, lets the
    worker write a later batch into the same shared memory after the main process
    has freed every tensor over this one (:mod:`ferv39k_hf._shared_batches`); it
    arrives in the main process as a plain dict.

    Args:
        examples: the rows of one batch, each a dict of tensors (``pixel_values``
            (T, 3, S, S) float32, ``labels`` () int64, ...) as datasets splits a
            transformed batch.

    Returns:
        A dict with the same keys and a leading batch dimension B:
        ``pixel_values`` (B, T, 3, S, S), ``labels`` (B,).

    Example::

        loader = torch.utils.data.DataLoader(train, batch_size=8, num_workers=4, collate_fn=ferv39k_hf.collate_clips)
        # with transformers: Trainer(..., data_collator=ferv39k_hf.collate_clips)
    """
    batch: Dict[str, Any] = {}
    for key, first in examples[0].items():
        values = [example[key] for example in examples]
        joined = _rows_of_one_tensor(values) if torch.is_tensor(first) else None
        if joined is None and torch.is_tensor(first):
            return torch.utils.data.default_collate(examples)
        batch[key] = joined if joined is not None else torch.utils.data.default_collate(values)
    return _shared_batches.lease(batch)


def _rows_of_one_tensor(rows: List[torch.Tensor]) -> Optional[torch.Tensor]:
    """A tensor over the memory that holds ``rows`` back to back, when that is all its storage; else None.

    Rows may be laid out in any dense order (the channels-last clips of
    :class:`VideoClipTransform`); the joined tensor keeps their strides.
    """
    first = rows[0]
    storage = first.untyped_storage()
    row_numel = first.numel()
    row_bytes = row_numel * first.element_size()
    if first.storage_offset() != 0 or storage.nbytes() != row_bytes * len(rows) or not _dense(first):
        return None
    for position, row in enumerate(rows):
        same_storage = row.untyped_storage().data_ptr() == storage.data_ptr()
        if not (same_storage and row.shape == first.shape and row.stride() == first.stride()
                and row.dtype == first.dtype and row.storage_offset() == position * row_numel):
            return None
    return torch.empty(0, dtype=first.dtype).set_(storage, 0, (len(rows),) + tuple(first.shape),
                                                  (row_numel,) + tuple(first.stride()))


def _dense(tensor: torch.Tensor) -> bool:
    """Whether ``tensor``'s elements fill exactly ``numel`` consecutive elements of memory, in some order."""
    order = sorted(range(tensor.dim()), key=lambda d: tensor.stride(d), reverse=True)
    return tensor.permute(order).is_contiguous()


# --- datasets helpers -------------------------------------------------------------------------------


def _without_image_decoding(feature: Any) -> Any:
    """``feature`` with every Image() inside it set to decode=False, containers kept as they are."""
    from datasets import Image as ImageFeature

    if isinstance(feature, ImageFeature):
        return dataclasses.replace(feature, decode=False)
    if isinstance(feature, list):
        return [_without_image_decoding(feature[0])]
    if isinstance(feature, dict):
        return {key: _without_image_decoding(value) for key, value in feature.items()}
    if dataclasses.is_dataclass(feature) and hasattr(feature, "feature"):  # Sequence (2.x-3.x), List (4.0+)
        return dataclasses.replace(feature, feature=_without_image_decoding(feature.feature))
    return feature


def undecoded_frames(dataset: Any, column: str = "frames") -> Any:
    """``dataset`` with its frames read as undecoded ``{"bytes", "path"}`` dicts.

    Works on ``Dataset``, ``DatasetDict``, ``IterableDataset`` and
    ``IterableDatasetDict`` of datasets 2.x to 5.x; a dataset without the column
    (the videos config) or without known features is returned unchanged. Then
    :class:`VideoClipTransform` decodes only the frames it samples.

    Args:
        dataset: a FERV39k dataset (or dict of splits) whose ``column`` is a list of Image.
        column: the frame column (``"frames"``).

    Returns:
        The same kind of object, its ``column`` typed ``Image(decode=False)``: rows
        give ``{"bytes": JPEG bytes, "path": str or None}`` per frame. No data is
        copied for a map-style ``Dataset``.

    Example::

        ds = ferv39k_hf.undecoded_frames(datasets.load_dataset("ferv39k"))
        ds["train"][0]["frames"][0].keys()     # dict_keys(['bytes', 'path'])
    """
    if hasattr(dataset, "keys") and hasattr(dataset, "values") and not hasattr(dataset, "features"):
        return type(dataset)({split: undecoded_frames(part, column) for split, part in dataset.items()})
    features = getattr(dataset, "features", None)
    if features is None or column not in features:
        return dataset
    target = _without_image_decoding(features[column])
    if target == features[column]:
        return dataset
    relabelled = _relabel_in_place(dataset, column, target)
    return relabelled if relabelled is not None else dataset.cast_column(column, target)


def _relabel_in_place(dataset: Any, column: str, target: Any) -> Any:
    """A copy of a map-style ``dataset`` whose ``column`` reads as ``target``, the Arrow data shared.

    ``Dataset.cast_column`` rewrites the whole table when the Image sits inside a
    list (tens of GB for FERV39k), yet the decode flag does not change the Arrow
    storage. Returns None where the datasets internals differ, so the caller
    falls back to the public cast.
    """
    import copy
    import hashlib

    from datasets import Dataset

    if not isinstance(dataset, Dataset) or not hasattr(dataset, "_info") or not hasattr(dataset, "_fingerprint"):
        return None
    if target.__class__ is not dataset.features[column].__class__:
        return None
    relabelled = copy.deepcopy(dataset)  # datasets' deepcopy re-opens memory-mapped tables, it copies no data
    relabelled._info.features[column] = target
    relabelled._fingerprint = hashlib.sha256(f"{dataset._fingerprint}/undecoded/{column}".encode()).hexdigest()[:16]
    return relabelled
