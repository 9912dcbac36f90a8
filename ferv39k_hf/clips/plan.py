"""One row's draw for VideoClipTransform: its frames, its boxes in source pixels, the flip, the downscale."""

from __future__ import annotations

import dataclasses
from typing import Any, List, Optional, Tuple

import numpy as np

from ferv39k_hf.clips.geometry import Box, scale_box

__all__ = ["ClipPlan"]


@dataclasses.dataclass
class ClipPlan:
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
        return [scale_box(box, sy, sx, height, width) for box in self.boxes]
