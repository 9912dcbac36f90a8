"""Drawings for the synthetic sample archive: faces whose expression carries the class.

A clip gets one :class:`ClipLook` (face position, size, skin, hair, background,
expression strength). Its base picture is drawn once with PIL; every frame is
then a shifted crop of that base plus a crop of a shared noise texture, so a
frame costs one crop, one add and one JPEG encode.

Class cues (all scaled by the clip's expression strength): Happy a wide open
smile and raised cheeks; Sad a frown, brows raised at the inner ends and a
tear; Surprise a round open mouth, high arched brows and wide eyes; Angry
V-shaped brows, narrowed eyes, clenched teeth; Disgust a crooked mouth, one
lowered brow, one squinted eye and nose wrinkles; Fear very wide eyes with
small pupils, brows raised at the inner ends and a wide flat open mouth;
Neutral a straight mouth and level brows.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageChops, ImageDraw

from ferv39k_hf.taxonomy import SCENE_TO_SCENARIO, SCENES

Color = Tuple[int, int, int]

FACE_SIZE = 224  # face crops are 224x224, as in the archive
SCENE_SIZE = (320, 240)  # scene frames: wider, with the face smaller inside
FACE_MARGIN = 5  # the largest per-frame shift, in pixels
SCENE_MARGIN = 5
JPEG_QUALITY = 87
# Noise is added with ImageChops.add_modulo (fast, but it wraps at 255), so
# bases are compressed into [0, 255 - NOISE_SPAN] and noise lies in [0, NOISE_SPAN].
NOISE_SPAN = 24
NOISE_SIGMA = 3.6

_SKIN_TONES: Tuple[Color, ...] = (
    (241, 206, 180), (224, 172, 138), (198, 140, 102), (160, 108, 74), (118, 78, 52), (232, 190, 150),
)
_HAIR_COLORS: Tuple[Color, ...] = ((30, 24, 20), (80, 52, 30), (150, 110, 60), (200, 170, 110), (110, 110, 110))
_EYE_COLORS: Tuple[Color, ...] = ((60, 40, 25), (40, 80, 120), (60, 100, 60), (30, 30, 30))


@dataclass(frozen=True)
class ClipLook:
    """Everything that varies between clips but not between a clip's frames."""

    center: Tuple[float, float]  # face centre as a fraction of the canvas
    radius: float  # face half-width as a fraction of the canvas width
    aspect: float  # face height / width
    skin: Color
    hair: Color
    hair_style: int  # 0 none, 1 cap, 2 cap and long sides
    eyes: Color
    background: Tuple[Color, Color]
    texture_seed: int
    strength: float  # expression strength in [0.75, 1]: 1 is the full class drawing


def sample_look(rng: np.random.Generator) -> ClipLook:
    skin = np.array(_SKIN_TONES[rng.integers(len(_SKIN_TONES))]) + rng.integers(-12, 13, 3)
    background = tuple(_mix(tuple(int(v) for v in rng.integers(0, 256, 3)), (128, 128, 128), 0.5) for _ in range(2))
    return ClipLook(
        # Face crops come from a detector: the face is near the centre at a similar size.
        center=(float(rng.uniform(0.47, 0.53)), float(rng.uniform(0.48, 0.54))),
        radius=float(rng.uniform(0.29, 0.34)),
        aspect=float(rng.uniform(1.12, 1.3)),
        skin=tuple(int(v) for v in np.clip(skin, 0, 255)),
        hair=_HAIR_COLORS[rng.integers(len(_HAIR_COLORS))],
        hair_style=int(rng.integers(3)),
        eyes=_EYE_COLORS[rng.integers(len(_EYE_COLORS))],
        background=background,
        texture_seed=int(rng.integers(2**31)),
        strength=float(rng.uniform(0.75, 1.0)),
    )


# Per class: brow (outer y, inner y) for the left and right brow, eye half-height
# for left and right eye, pupil radius; all in units of the face half-width.
_BROWS = {
    "Neutral": ((-0.38, -0.38), (-0.38, -0.38)), "Happy": ((-0.44, -0.44), (-0.44, -0.44)),
    "Sad": ((-0.30, -0.52), (-0.30, -0.52)), "Surprise": ((-0.56, -0.56), (-0.56, -0.56)),
    "Angry": ((-0.50, -0.22), (-0.50, -0.22)), "Disgust": ((-0.30, -0.22), (-0.40, -0.40)),
    "Fear": ((-0.44, -0.62), (-0.44, -0.62)),
}
_EYES = {
    "Neutral": (0.09, 0.09, 0.06), "Happy": (0.045, 0.045, 0.05), "Sad": (0.075, 0.075, 0.06),
    "Surprise": (0.16, 0.16, 0.05), "Angry": (0.05, 0.05, 0.055), "Disgust": (0.035, 0.085, 0.06),
    "Fear": (0.18, 0.18, 0.035),
}


def _mix(a: Color, b: Color, t: float) -> Color:
    return tuple(int(round(x + (y - x) * t)) for x, y in zip(a, b))


class _FacePen:
    """Draws in face units: x, y in half-widths from the face centre, y down."""

    def __init__(self, draw: ImageDraw.ImageDraw, cx: float, cy: float, r: float, aspect: float):
        self.draw, self.cx, self.cy, self.r, self.aspect = draw, cx, cy, r, aspect

    def xy(self, x: float, y: float) -> Tuple[float, float]:
        return self.cx + x * self.r, self.cy + y * self.r

    def box(self, x0: float, y0: float, x1: float, y1: float) -> List[float]:
        (a, b), (c, d) = self.xy(x0, y0), self.xy(x1, y1)
        return [a, b, c, d]

    def width(self, w: float) -> int:
        return max(1, int(round(w * self.r)))

    def line(self, points: Sequence[Tuple[float, float]], color: Color, w: float) -> None:
        self.draw.line([self.xy(x, y) for x, y in points], fill=color, width=self.width(w), joint="curve")


def _blend(level_neutral: float, level_class: float, strength: float) -> float:
    return level_neutral + (level_class - level_neutral) * strength


def draw_face(draw: ImageDraw.ImageDraw, cx: float, cy: float, r: float, look: ClipLook,
              emotion: str, blink: bool = False) -> None:
    """Head, hair, eyes, brows, nose and mouth of one expression at centre (cx, cy), half-width r."""
    pen = _FacePen(draw, cx, cy, r, look.aspect)
    ry = look.aspect
    skin = _mix(look.skin, (200, 40, 40), 0.22 * look.strength) if emotion == "Angry" else look.skin
    if look.hair_style == 2:
        draw.rectangle(pen.box(-1.08, -0.7 * ry, 1.08, 0.55 * ry), fill=look.hair)
    draw.ellipse(pen.box(-1.0, -ry, 1.0, ry), fill=skin)
    if look.hair_style:
        # The cap stops above the brows: brows carry much of the class.
        draw.chord(pen.box(-1.0, -1.04 * ry, 1.0, -0.46 * ry), 180, 360, fill=look.hair)
    dark = _mix(skin, (20, 10, 10), 0.75)
    _draw_eyes(pen, look, emotion, blink, dark)
    _draw_brows(pen, look, emotion, _mix(look.hair, dark, 0.6))
    pen.line([(0.0, -0.02), (0.07, 0.22), (-0.04, 0.25)], _mix(skin, (60, 30, 20), 0.45), 0.035)
    _draw_mouth(pen, look, emotion, skin, dark)


def _draw_eyes(pen: _FacePen, look: ClipLook, emotion: str, blink: bool, dark: Color) -> None:
    left_h, right_h, pupil = _EYES[emotion]
    neutral_h, _, neutral_pupil = _EYES["Neutral"]
    pupil = _blend(neutral_pupil, pupil, look.strength)
    for side, height in ((-1, left_h), (1, right_h)):
        x = 0.36 * side
        if blink:
            pen.line([(x - 0.16, -0.12), (x + 0.16, -0.12)], dark, 0.04)
            continue
        h = _blend(neutral_h, height, look.strength)
        pen.draw.ellipse(pen.box(x - 0.17, -0.12 - h, x + 0.17, -0.12 + h), fill=(236, 236, 232), outline=dark,
                         width=pen.width(0.02))
        p = min(pupil, h)
        pen.draw.ellipse(pen.box(x - p, -0.12 - p, x + p, -0.12 + p), fill=look.eyes)
    if emotion == "Disgust":  # nose wrinkles
        for side in (-1, 1):
            pen.line([(0.07 * side, -0.06), (0.16 * side, 0.0)], dark, 0.025)
            pen.line([(0.07 * side, 0.0), (0.16 * side, 0.06)], dark, 0.025)


def _draw_brows(pen: _FacePen, look: ClipLook, emotion: str, color: Color) -> None:
    thickness = 0.12 if emotion == "Angry" else 0.085
    arch = -0.08 if emotion == "Surprise" else 0.0
    for side, (outer, inner) in zip((-1, 1), _BROWS[emotion]):
        (n_outer, n_inner) = _BROWS["Neutral"][0]
        outer, inner = _blend(n_outer, outer, look.strength), _blend(n_inner, inner, look.strength)
        mid = (outer + inner) / 2 + arch * look.strength
        pen.line([(0.58 * side, outer), (0.37 * side, mid), (0.16 * side, inner)], color, thickness)


def _draw_mouth(pen: _FacePen, look: ClipLook, emotion: str, skin: Color, dark: Color) -> None:
    k = look.strength
    lips = _mix(skin, (120, 20, 30), 0.6)
    inside = (70, 15, 20)
    teeth = (240, 238, 228)
    y = 0.5
    if emotion == "Happy":
        half = 0.36 + 0.1 * k
        pen.draw.chord(pen.box(-half, y - 0.2, half, y + 0.12 + 0.22 * k), 0, 180, fill=inside, outline=lips,
                       width=pen.width(0.04))
        pen.draw.rectangle(pen.box(-half * 0.8, y - 0.04, half * 0.8, y + 0.04), fill=teeth)
        for side in (-1, 1):  # raised cheeks
            cheek = _mix(skin, (230, 90, 100), 0.45)
            pen.draw.ellipse(pen.box(0.5 * side - 0.13, 0.14, 0.5 * side + 0.13, 0.32), fill=cheek)
    elif emotion == "Sad":
        pen.draw.arc(pen.box(-0.32, y - 0.02, 0.32, y + 0.34 * k + 0.1), 200, 340, fill=lips, width=pen.width(0.08))
        pen.draw.ellipse(pen.box(0.3, 0.0, 0.38, 0.14), fill=(120, 170, 230))  # a tear
    elif emotion == "Surprise":
        pen.draw.ellipse(pen.box(-0.17, y - 0.1 - 0.12 * k, 0.17, y + 0.1 + 0.12 * k), fill=inside, outline=lips,
                         width=pen.width(0.04))
    elif emotion == "Angry":
        pen.draw.rectangle(pen.box(-0.28, y - 0.06, 0.28, y + 0.07), fill=teeth, outline=lips, width=pen.width(0.035))
        for x in (-0.14, 0.0, 0.14):
            pen.line([(x, y - 0.06), (x, y + 0.07)], dark, 0.015)
        pen.line([(-0.28, y), (0.28, y)], dark, 0.015)
    elif emotion == "Disgust":
        pts = [(-0.3, y + 0.06), (-0.14, y - 0.02), (0.0, y + 0.06), (0.14, y - 0.1 * k), (0.3, y - 0.18 * k)]
        pen.line(pts, lips, 0.08)
    elif emotion == "Fear":
        half = 0.3 + 0.08 * k
        pen.draw.rectangle(pen.box(-half, y - 0.06, half, y + 0.04 + 0.08 * k), fill=inside, outline=lips,
                           width=pen.width(0.035))
        pen.draw.rectangle(pen.box(-half * 0.85, y - 0.05, half * 0.85, y - 0.01), fill=teeth)
    else:  # Neutral
        pen.line([(-0.28, y + 0.02), (0.28, y + 0.02)], lips, 0.07)


def _backdrop(size: Tuple[int, int], look: ClipLook) -> Image.Image:
    """A smooth, blotchy two-colour background (a low-resolution random field upscaled)."""
    rng = np.random.default_rng(look.texture_seed)
    field = rng.random((6, 8, 1))
    a, b = np.array(look.background[0], float), np.array(look.background[1], float)
    colors = (a + (b - a) * field + rng.normal(0, 14, (6, 8, 3))).clip(0, 255).astype(np.uint8)
    return Image.fromarray(colors).resize(size, Image.BICUBIC)


def _compress_range(image: Image.Image) -> Image.Image:
    top = 255 - NOISE_SPAN
    return image.point([v * top // 255 for v in range(256)] * 3)


def render_face_bases(look: ClipLook, emotion: str) -> Tuple[Image.Image, Image.Image]:
    """The clip's face-crop base (with FACE_MARGIN on each side) and the same with the eyes closed."""
    side = FACE_SIZE + 2 * FACE_MARGIN
    backdrop = _backdrop((side, side), look)
    cx, cy = look.center[0] * FACE_SIZE + FACE_MARGIN, look.center[1] * FACE_SIZE + FACE_MARGIN
    r = look.radius * FACE_SIZE
    return tuple(_draw_on(backdrop, cx, cy, r, look, emotion, blink) for blink in (False, True))


def render_scene_bases(look: ClipLook, scene: str, emotion: str,
                       rng: np.random.Generator) -> Tuple[Image.Image, Image.Image]:
    """The clip's scene-frame base: a scene-coloured set, a body and the same face, smaller."""
    w, h = SCENE_SIZE[0] + 2 * SCENE_MARGIN, SCENE_SIZE[1] + 2 * SCENE_MARGIN
    backdrop = _scene_set((w, h), look, scene, rng)
    cx = SCENE_MARGIN + SCENE_SIZE[0] * float(rng.uniform(0.3, 0.7))
    cy = SCENE_MARGIN + SCENE_SIZE[1] * float(rng.uniform(0.36, 0.48))
    r = SCENE_SIZE[1] * look.radius * 0.5
    draw = ImageDraw.Draw(backdrop)
    clothes = tuple(int(v) for v in rng.integers(20, 220, 3))
    draw.ellipse([cx - 2.4 * r, cy + 1.1 * r * look.aspect, cx + 2.4 * r, cy + 5 * r], fill=clothes)
    return tuple(_draw_on(backdrop, cx, cy, r, look, emotion, blink) for blink in (False, True))


def _scene_set(size: Tuple[int, int], look: ClipLook, scene: str, rng: np.random.Generator) -> Image.Image:
    # Each scene has its own hue; each scenario its own kind of props.
    image = _backdrop(size, look)
    hue = SCENES.index(scene) / len(SCENES)
    tint = tuple(int(v) for v in Image.new("HSV", (1, 1), (int(hue * 255), 150, 170)).convert("RGB").getpixel((0, 0)))
    image = Image.blend(image, Image.new("RGB", size, tint), 0.45)
    draw = ImageDraw.Draw(image)
    w, h = size
    scenario = SCENE_TO_SCENARIO[scene]
    draw.rectangle([0, int(h * rng.uniform(0.7, 0.85)), w, h], fill=_mix(tint, (40, 40, 40), 0.5))  # floor
    for _ in range(int(rng.integers(3, 7))):
        x, y = float(rng.uniform(0, w)), float(rng.uniform(0, h * 0.7))
        s = float(rng.uniform(20, 80))
        color = _mix(tint, tuple(int(v) for v in rng.integers(0, 256, 3)), 0.5)
        if scenario == "Weak-Interactive Shows":  # stage lights
            draw.ellipse([x - s / 2, y - s / 2, x + s / 2, y + s / 2], fill=_mix(color, (255, 250, 210), 0.6))
        elif scenario == "Anomaly Issues":  # smoke and debris
            draw.polygon([(x, y), (x + s, y + s / 3), (x + s / 2, y + s)], fill=_mix(color, (30, 30, 30), 0.6))
        else:  # furniture, windows, screens
            draw.rectangle([x, y, x + s, y + s * 0.7], fill=color, outline=_mix(color, (0, 0, 0), 0.5), width=2)
    return image


def _draw_on(backdrop: Image.Image, cx: float, cy: float, r: float, look: ClipLook, emotion: str,
             blink: bool) -> Image.Image:
    image = backdrop.copy()
    draw_face(ImageDraw.Draw(image), cx, cy, r, look, emotion, blink)
    return _compress_range(image)


class NoisePool:
    """A few sensor-noise textures, larger than a frame, cropped at random offsets per frame."""

    def __init__(self, seed: int, size: Tuple[int, int], count: int = 8, slack: int = 48):
        rng = np.random.default_rng([seed, size[0], size[1]])
        w, h = size[0] + slack, size[1] + slack
        self.size, self.slack = size, slack
        self.textures = []
        for _ in range(count):
            luma = rng.normal(NOISE_SPAN / 2, NOISE_SIGMA, (h, w, 1))
            chroma = rng.normal(0, NOISE_SIGMA / 3, (h, w, 3))
            noise = (luma + chroma).clip(0, NOISE_SPAN).astype(np.uint8)
            self.textures.append(Image.fromarray(noise))

    def pick(self, rng: np.random.Generator) -> Image.Image:
        texture = self.textures[int(rng.integers(len(self.textures)))]
        x, y = (int(v) for v in rng.integers(0, self.slack + 1, 2))
        return texture.crop((x, y, x + self.size[0], y + self.size[1]))


def motion_path(rng: np.random.Generator, num_frames: int, margin: int) -> np.ndarray:
    """A smooth random walk of integer (dx, dy) shifts within +-margin, one per frame."""
    steps = rng.normal(0, 0.8, (num_frames, 2))
    path = np.cumsum(steps, axis=0) + rng.uniform(-margin / 2, margin / 2, 2)
    return np.clip(np.round(path), -margin, margin).astype(int)


def blink_frames(rng: np.random.Generator, num_frames: int) -> set:
    """Frames with closed eyes: about one short blink every 40 frames."""
    frames = set()
    for _ in range(int(rng.poisson(num_frames / 40))):
        start = int(rng.integers(num_frames))
        frames.update(range(start, min(num_frames, start + 2)))
    return frames


def frame_images(bases: Tuple[Image.Image, Image.Image], size: Tuple[int, int], margin: int, path: np.ndarray,
                 blinks: set, noise: Optional[NoisePool], rng: np.random.Generator) -> Iterator[Image.Image]:
    """The clip's frames: base (or the blink base) shifted by the path, plus noise unless noise is None."""
    for index, (dx, dy) in enumerate(path):
        base = bases[1] if index in blinks else bases[0]
        x, y = margin + dx, margin + dy
        crop = base.crop((x, y, x + size[0], y + size[1]))
        yield crop if noise is None else ImageChops.add_modulo(crop, noise.pick(rng))


def encode_jpeg(image: Image.Image, quality: int = JPEG_QUALITY) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()
