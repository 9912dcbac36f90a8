"""What bench/loader.py measures the clip loader against: the folder-of-JPEG baseline and the JPEG decode floor."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Callable, List, Sequence

import numpy as np


def clip_folders(archive: Path, clip_ids: Sequence[str]) -> List[str]:
    """The unpacked face-crop folder of each clip (the baseline reads these)."""
    from ferv39k_hf.archive.layout import find_layout

    part = find_layout(archive).part("faces")
    folders = []
    for clip_id in clip_ids:
        refs = part.frames(clip_id)
        if not refs or refs[0].container is not None:
            raise SystemExit(f"clip {clip_id}: the baseline needs the archive unpacked into folders")
        folders.append(os.path.dirname(refs[0].name))
    return folders


def folder_baseline(folders: Sequence[str], num_frames: int, size: int, train: bool, sampling: str):
    """One epoch over ``folders`` the way published loaders do it, clip by clip."""
    import torch
    from PIL import Image

    from ferv39k_hf.clips.geometry import IMAGENET_MEAN, IMAGENET_STD, random_resized_box
    from ferv39k_hf.clips.sampling import sample_indices

    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)

    def load(folder: str, rng: np.random.Generator) -> torch.Tensor:
        names = sorted(n for n in os.listdir(folder) if n.endswith(".jpg"))
        indices = sample_indices(sampling, len(names), num_frames, train, rng)
        images = [Image.open(os.path.join(folder, names[i])).convert("RGB") for i in indices]
        if train:  # one random resized crop and flip for the group, applied frame by frame
            box = random_resized_box(images[0].height, images[0].width, rng, (0.6, 1.0), (3 / 4, 4 / 3))
            images = [im.crop(box).resize((size, size), Image.BILINEAR) for im in images]
            if rng.random() < 0.5:
                images = [im.transpose(Image.FLIP_LEFT_RIGHT) for im in images]
        else:  # resize the short side, centre crop
            images = [_resize_short_centre_crop(im, size) for im in images]
        # torchvision's ToTensor then Normalize, frame by frame
        tensors = [torch.from_numpy(np.array(im, copy=True)).permute(2, 0, 1).float().div(255) for im in images]
        return torch.stack([(t - mean) / std for t in tensors])

    def epoch() -> None:
        rng = np.random.default_rng(0)
        for folder in folders:
            load(folder, rng)

    return epoch


def _resize_short_centre_crop(image, size: int):
    from PIL import Image

    scale = size / min(image.size)
    resized = image.resize((max(size, round(image.width * scale)), max(size, round(image.height * scale))),
                           Image.BILINEAR)
    left, top = (resized.width - size) // 2, (resized.height - size) // 2
    return resized.crop((left, top, left + size, top + size))


def sampled_frame_bytes(dataset, num_frames: int, sampling: str) -> List[List[bytes]]:
    """The encoded bytes of each clip's distinct sampled frames (eval sampling), read before timing."""
    from ferv39k_hf.clips.sampling import sample_indices

    clips = []
    for row in dataset:
        frames = row["frames"]
        indices = np.unique(sample_indices(sampling, len(frames), num_frames, train=False))
        clips.append([frames[i]["bytes"] for i in indices])
    return clips


def decode_floor(clips: List[List[bytes]], decoder: str) -> Callable[[], None]:
    """Decode every listed JPEG once: Pillow to its pixel buffer, or simplejpeg into one reused array."""
    if decoder == "pil":
        from PIL import Image

        def epoch() -> None:
            for frames in clips:
                for data in frames:
                    Image.open(io.BytesIO(data)).load()
    else:
        import simplejpeg

        sizes = [[simplejpeg.decode_jpeg_header(data)[:2] for data in frames] for frames in clips]
        buffer = np.empty(max(h * w * 3 for shapes in sizes for h, w in shapes), dtype=np.uint8)

        def epoch() -> None:
            for frames, shapes in zip(clips, sizes):
                for data, (height, width) in zip(frames, shapes):
                    simplejpeg.decode_jpeg(data, colorspace="RGB", buffer=buffer[: height * width * 3])

    return epoch
