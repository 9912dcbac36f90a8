"""Synthetic archives shaped like DFEW and MAFW (frame folders, mp4s, fold lists, label files), for tests and demos.

Neither dataset may be used in tests or redistributed, so their shapes are
written here with drawn faces (see :mod:`.synthetic_faces`) and the variants
the facts name: frame names whose natural order differs from text order, clips
shorter than 16 frames, unlisted clips, unpadded clip numbers and CRLF in
DFEW's CSVs, MAFW's compound lists and captions with a GBK-encoded label file.
The same seed gives the same bytes.
"""

from __future__ import annotations

import io
import shutil
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ferv39k_hf import synthetic_faces as faces
from ferv39k_hf.dfer_taxonomy import DFEW_CLASSES, FOLDS, MAFW_CLASSES
from ferv39k_hf.errors import BuildError
from ferv39k_hf.samplemark import prepare_sample_out, write_sample_marker
from ferv39k_hf.synthetic import ZIP_DATE_TIME, encode_mp4

FRAME_SIZE = 64  # small frames: the layout is what is tested, not the resolution
# MAFW's extra classes are drawn with the nearest of the 7 drawable expressions.
_DRAWN = {"anger": "Angry", "disgust": "Disgust", "fear": "Fear", "happiness": "Happy", "neutral": "Neutral",
          "sadness": "Sad", "surprise": "Surprise", "contempt": "Disgust", "anxiety": "Fear",
          "helplessness": "Sad", "disappointment": "Sad"}
_COMPOUNDS = ("anger_disgust", "sadness_anxiety", "happiness_surprise", "fear_surprise_anxiety",
              "anger_contempt", "sadness_helplessness_disappointment")


@dataclass(frozen=True)
class SampleClip:
    clip_id: str  # 5-digit number
    labels: Tuple[str, ...]  # class words; () for a clip no list names
    fold: int  # the fold whose test list names it; 0 when unlisted
    num_frames: int
    names: str  # frame-name style: "plain" (1.jpg), "padded" (000.jpg), "prefixed" (00001_1.jpg), "png"


def _clip_rng(seed: int, clip_id: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(clip_id.encode())])


def plan_dfer_sample(dataset: str, per_class: int = 5, seed: int = 0) -> List[SampleClip]:
    """The clips: ``per_class`` listed clips per class dealt over the 5 folds, compound and unlisted clips besides."""
    rng = np.random.default_rng(seed)
    words = list(DFEW_CLASSES) if dataset == "dfew" else list(MAFW_CLASSES)
    labels: List[Tuple[str, ...]] = [(w,) for w in words for _ in range(per_class)]
    if dataset == "mafw":
        labels += [tuple(c.split("_")) for c in _COMPOUNDS for _ in range(max(1, per_class // 2))]
    labels += [()] * 3  # in the frame folders, in no list (DFEW: not single-labelled)
    order = rng.permutation(len(labels))
    styles = ("plain", "padded", "prefixed") + (("png",) if dataset == "mafw" else ())
    clips, dealt = [], {False: 0, True: 0}  # each set dealt round-robin: every fold has test clips of both
    for number, index in enumerate(order, start=1):
        clip_id = f"{number * 3:05d}"  # gaps, as in the release: not every number is a clip
        listed = labels[index]
        fold = 0
        if listed:
            fold = dealt[len(listed) > 1] % len(FOLDS) + 1
            dealt[len(listed) > 1] += 1
        clips.append(SampleClip(clip_id, listed, fold, int(rng.integers(6, 24)), styles[number % len(styles)]))
    return clips


def _frame_name(clip: SampleClip, k: int) -> str:
    return {"plain": f"{k + 1}.jpg", "padded": f"{k:03d}.jpg", "prefixed": f"{clip.clip_id}_{k + 1}.jpg",
            "png": f"{k + 1}.png"}[clip.names]


def _encode(image, png: bool) -> bytes:
    if not png:
        return faces.encode_jpeg(image)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def render_frames(clip: SampleClip, seed: int, count: Optional[int] = None) -> List:
    """The clip's frames as small PIL images (``count`` of them evenly resampled, for DFEW's 16-frame release)."""
    rng = _clip_rng(seed, clip.clip_id)
    look = faces.sample_look(rng)
    drawn = _DRAWN.get(clip.labels[0], clip.labels[0]) if clip.labels else "Neutral"
    bases = faces.render_face_bases(look, drawn)
    path = faces.motion_path(rng, clip.num_frames, faces.FACE_MARGIN)
    images = [im.resize((FRAME_SIZE, FRAME_SIZE)) for im in faces.frame_images(
        bases, (faces.FACE_SIZE, faces.FACE_SIZE), faces.FACE_MARGIN, path, set(), None, rng)]
    if count is not None:
        images = [images[int(i)] for i in np.linspace(0, len(images) - 1, count).round()]
    return images


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _frames_and_videos(root: Path, clips: Sequence[SampleClip], seed: int, folders: Dict[str, Optional[int]],
                       videos: Optional[Path]) -> None:
    """Every clip's frame folders (folder -> frame count, None: the clip's own) and, with ``videos``, its mp4."""
    for clip in clips:
        images = render_frames(clip, seed)
        for folder, count in folders.items():
            chosen = images if count is None else render_frames(clip, seed, count)
            for k, image in enumerate(chosen):
                name = _frame_name(clip, k) if count is None else f"{clip.clip_id}_{k + 1}.jpg"
                _write(root / folder / clip.clip_id / name, _encode(image, name.endswith(".png")))
        if videos is not None:
            _write(videos / f"{clip.clip_id}.mp4", encode_mp4(images, _codec()))


def _codec() -> str:
    import av

    return "libx264" if "libx264" in av.codecs_available else "mpeg4"


def _dfew_lists(root: Path, clips: Sequence[SampleClip]) -> None:
    listed = [c for c in clips if c.labels]
    for k in FOLDS:
        sides = (("train", [c for c in listed if c.fold != k]), ("test", [c for c in listed if c.fold == k]))
        for split, chosen in sides:
            # fold 1 pads the clip numbers, the others do not; fold 2 ends its lines with CRLF
            rows = [f"{c.clip_id if k == 1 else int(c.clip_id)},{DFEW_CLASSES.index(c.labels[0]) + 1}" for c in chosen]
            end = "\r\n" if k == 2 else "\n"
            text = end.join(["video_name,label"] + rows) + end
            _write(root / "EmoLabel_DataSplit" / f"{split}(single-labeled)" / f"set_{k}.csv", text.encode())


def _mafw_lists(root: Path, clips: Sequence[SampleClip]) -> None:
    lists = root / "Train & Test Set"
    for labelset in ("single", "compound"):
        listed = [c for c in clips if c.labels and (len(c.labels) > 1) == (labelset == "compound")]
        for k in FOLDS:
            for split in ("train", "test"):
                chosen = [c for c in listed if (c.fold == k) == (split == "test")]
                text = "".join(f"{c.clip_id}.mp4 {'_'.join(c.labels)}\n" for c in chosen)
                _write(lists / labelset / "no_caption" / f"set_{k}" / f"{split}.txt", text.encode())
    for name, compound in (("single_label.txt", False), ("multi_label.txt", True)):
        chosen = [c for c in clips if c.labels and (len(c.labels) > 1) == compound]
        text = "".join(f"{c.clip_id}.mp4  {'_'.join(c.labels)}  <br>第{int(c.clip_id)}段视频 <br> synthetic clip "
                       f"{c.clip_id} showing {' and '.join(c.labels)}\n" for c in chosen)
        # single_label.txt in GBK, as some shipped label and list files are
        _write(root / name, text.encode("gbk" if not compound else "utf-8"))


def _zip_folder(folder: Path) -> None:
    """Replace ``folder`` by ``folder.zip`` holding it (its name the members' first component), fixed dates."""
    with zipfile.ZipFile(folder.with_name(folder.name + ".zip"), "w") as archive:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            info = zipfile.ZipInfo(str(path.relative_to(folder.parent)).replace("\\", "/"), date_time=ZIP_DATE_TIME)
            info.external_attr = 0o644 << 16
            archive.writestr(info, path.read_bytes())
    shutil.rmtree(folder)


def write_dfer_sample(out, dataset: str, *, per_class: int = 5, seed: int = 0, videos: bool = True,
                      zip: bool = False) -> List[SampleClip]:
    """Write a synthetic DFEW- or MAFW-shaped archive to ``out`` (absent or empty); the planned clips.

    DFEW: ``DFEW/Clip/{clip_224x224,clip_224x224_16f,original}`` and ``DFEW/EmoLabel_DataSplit``; MAFW:
    ``MAFW/data/{faces,clips}``, ``MAFW/Train & Test Set/{single,compound}/no_caption/set_K`` and the label files.
    ``zip`` packs each frame folder (and the mp4s) into a zip of its name beside where it was.
    """
    if dataset not in ("dfew", "mafw"):
        raise BuildError(f"no synthetic sample for dataset {dataset!r}; choose ferv39k, dfew or mafw")
    root = Path(out)
    settings = {"dataset": dataset, "per_class": per_class, "seed": seed, "videos": videos, "zip": zip}
    clips = plan_dfer_sample(dataset, per_class, seed)
    if prepare_sample_out(root, settings):  # this very sample is there already (its marker says so)
        return clips
    if dataset == "dfew":
        top = root / "DFEW" / "Clip"
        folders = {"clip_224x224": None, "clip_224x224_16f": 16}
        _frames_and_videos(top, clips, seed, folders, top / "original" if videos else None)
        _dfew_lists(root / "DFEW", clips)
    else:
        top = root / "MAFW" / "data"
        folders = {"faces": None}
        _frames_and_videos(top, clips, seed, folders, top / "clips" if videos else None)
        _mafw_lists(root / "MAFW", clips)
    if zip:
        for name in list(folders) + (["original" if dataset == "dfew" else "clips"] if videos else []):
            _zip_folder(top / name)
    write_sample_marker(root, settings, complete=True)
    return clips


def run_dfer_sample(args) -> int:
    """``ferv39k-hf sample --dataset dfew|mafw OUT``."""
    clips = write_dfer_sample(args.out, args.dataset, seed=args.seed, videos="videos" in args.parts, zip=args.zip)
    listed = sum(1 for c in clips if c.labels)
    print(f"wrote a synthetic {args.dataset.upper()}-shaped archive (no {args.dataset.upper()} data) to {args.out}")
    print(f"  clips: {listed} in the fold lists, {len(clips) - listed} in no list; "
          f"{sum(c.num_frames for c in clips):,} frames")
    return 0
