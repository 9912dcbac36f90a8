"""DeviceFinish: crop, resize, flip and normalise on_device batches on the accelerator, in the model's dtype."""

from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Tuple

import torch

from ferv39k_hf.clips.geometry import IMAGENET_MEAN, IMAGENET_STD, channel_scale_bias


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
                       for values in channel_scale_bias(self.mean, self.std))
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
