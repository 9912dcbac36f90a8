"""Rows of the FERV39k datasets -> normalised clip tensors for video transformers.

:class:`VideoClipTransform` is a callable for ``Dataset.with_transform``. For every
row it picks the frame indices first (:mod:`ferv39k_hf.clips.sampling`), decodes only
those frames (:mod:`ferv39k_hf.clips.video`), applies one crop, resize and flip to the
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

import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ferv39k_hf.clips import batchmem, geometry
from ferv39k_hf.clips.device import DeviceFinish
from ferv39k_hf.clips.geometry import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Box,
    Normaliser,
    crop_resize,
    random_resized_box,
    short_side_boxes,
)
from ferv39k_hf.clips.plan import ClipPlan
from ferv39k_hf.clips.presets import get_preset, rotate_frames
from ferv39k_hf.clips.sampling import SAMPLINGS, sample_indices, sample_views
from ferv39k_hf.clips.video import Scratch, row_sources, simplejpeg_available

__all__ = ["VideoClipTransform"]


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
            :mod:`ferv39k_hf.clips.sampling`, :mod:`ferv39k_hf.clips.presets` and
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
            extension (``ferv39k_hf.clips.ckernel``, built at install where a C compiler is
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
        if fused and geometry.fused_kernel() is None:
            raise ImportError("fused=True needs the C extension ferv39k_hf.clips.ckernel, which this install lacks: "
                              "reinstall the package where a C compiler (gcc or clang) is on the PATH")
        if fused and not self.channels_last:
            raise ValueError("fused=True writes channels-last frames: it needs channels_last=True")
        self.fused = geometry.fused_kernel() is not None and self.channels_last if fused is None else bool(fused)
        self._normaliser = Normaliser(self.mean, self.std, self.size, self.channels_last)
        self.epoch = 0
        self._rng_key: Optional[Tuple[int, int, int]] = None
        self._generator: Optional[np.random.Generator] = None
        self.reuse_memory = bool(reuse_memory)
        # neither is pickled with its memory
        self._scratch, self._batches = Scratch(self.reuse_memory), batchmem.BatchPool()

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
        sources = row_sources(batch, self.use_simplejpeg)
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

    def _indices(self, frame_count: int, rng: Optional[np.random.Generator], views: int) -> np.ndarray:
        if views > 1:
            return sample_views(self.sampling, frame_count, self.num_frames, views, stride=self.stride)
        return sample_indices(self.sampling, frame_count, self.num_frames, self.train, rng, self.stride)[None]

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

    def _plan(self, source: Any, rng, temporal_views: int, spatial_views: int) -> ClipPlan:
        """Draw one row's sample, boxes and flip, and pick the decoder's downscale (no pixels decoded,
        except for videos, whose frame size is known only once decoded)."""
        index_sets = self._indices(source.frame_count, rng, temporal_views)
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
        return ClipPlan(source, unique, positions.reshape(index_sets.shape).tolist(), tuple(source_size), boxes,
                         flip, reduce, frames, angle)

    def _clip_into(self, plan: ClipPlan, spatial_views: int, out: torch.Tensor) -> None:
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
        kernel = geometry.fused_kernel()
        for s, box in enumerate(plan.boxes_for(height, width)):
            if fused and (plan.flip or (box[2] - box[0], box[3] - box[1]) != (self.size, self.size)
                          or kernel.simd()):
                # one pass per output frame; without the kernel's AVX2 passes, a crop that needs
                # neither resize nor flip is faster as the torch path's single normalising pass
                norm = self._normaliser
                for t, frame_positions in enumerate(plan.positions):
                    kernel.crop_resize_normalise(frames, frames.shape[:3], frame_positions, box, plan.flip, self.size,
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

    def _deferred_views(self, plans: List[ClipPlan], spatial_views: int) -> Dict[str, torch.Tensor]:
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
        """Memory for a batch (:func:`~ferv39k_hf.clips.batchmem.batch_memory`)."""
        return batchmem.batch_memory(shape, dtype, self._batches, self.reuse_memory)

    def device_finish(self) -> "DeviceFinish":
        """The :class:`DeviceFinish` that completes this transform's ``on_device`` batches."""
        return DeviceFinish(self.size, self.mean, self.std)
