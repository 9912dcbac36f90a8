"""A synthetic archive with FERV39k's layout, for tests, demos and benchmarks.

FERV39k itself may never be used in tests or redistributed, so everything
downstream is exercised on this stand-in: the real folders, split files, clip
numbering and frames-per-clip distribution, with drawn faces whose
expression carries a learnable class signal (see :mod:`.synthetic_faces`).

Planning (which clips, their numbers, splits and frame counts) is a pure
function of (scale, seed); rendering a clip depends only on the seed and the
clip id, so the same seed gives byte-identical files, whichever parts are
written and whether they are zipped.
"""

from __future__ import annotations

import functools
import io
import multiprocessing
import os
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from ferv39k_hf import synthetic_faces as faces
from ferv39k_hf.errors import BuildError
from ferv39k_hf.samplemark import (  # noqa: F401  (public)
    SAMPLE_MARKER,
    is_sample_archive,
    prepare_sample_out,
    read_sample_marker,
    write_sample_marker,
)
from ferv39k_hf.synthetic_sinks import DRIVE_EXPORT, ZIP_DATE_TIME, FolderSink, ZipSink  # noqa: F401  (re-exported)
from ferv39k_hf.taxonomy import (
    CLASS_WORDS,
    CONFIG_NAMES,
    FRAMES_PER_CLIP,
    PART_FOLDERS,
    SCENES,
    SPLIT_FILE_NAMES,
    SPLITS,
    official_counts,
)

# 1% of the official counts per cell, at least one clip each: 486 clips.
DEFAULT_SCALE = 0.01
PART_KINDS: Tuple[str, ...] = CONFIG_NAMES
VIDEO_RATE = 25

@dataclass(frozen=True)
class PlannedClip:
    clip_id: str  # "Scene/Emotion/NNNN"
    scene: str
    emotion: str
    split: str
    num_frames: int


@dataclass(frozen=True)
class SamplePlan:
    scale: float
    seed: int
    clips: Tuple[PlannedClip, ...]  # sorted by clip id
    split_lines: Dict[str, Tuple[str, ...]]  # split -> split-file lines in file order


@dataclass(frozen=True)
class SampleSummary:
    root: Path
    clips: Dict[str, int]  # clips per split
    frames: int  # frames per part: the sum of every clip's frame count
    files: int  # files written (zips count as one each)
    bytes: int  # size on disk
    parts: Tuple[str, ...]
    zipped: bool
    seconds: float
    reused: bool = False  # the folder already held this sample (its marker says so): nothing was written


def cell_counts(scale: float) -> Dict[Tuple[str, str, str], int]:
    """Clips per (split, scene, class word): round(scale * official), at least one."""
    return {
        (split, scene, word): max(1, round(scale * n))
        for split in SPLITS
        for (scene, word), n in official_counts(split).items()
    }


def frame_counts(num_clips: int, rng: np.random.Generator) -> np.ndarray:
    """Frames for each of num_clips clips, following the official histogram.

    Evenly spaced quantiles of the 38,935 official clip lengths, shuffled: at
    the full count this is exactly the official histogram, and at any count
    it is as close to it as the count allows.
    """
    lengths = sorted(FRAMES_PER_CLIP)
    official = np.repeat(lengths, [FRAMES_PER_CLIP[k] for k in lengths])
    quantiles = ((np.arange(num_clips) + 0.5) * len(official) / num_clips).astype(int)
    return rng.permutation(official[quantiles])


def plan_sample(scale: Optional[float] = None, seed: int = 0) -> SamplePlan:
    """Which clips the archive holds, their splits and frame counts; writes nothing."""
    scale = DEFAULT_SCALE if scale is None else float(scale)
    if not 0.0 < scale <= 1.0:
        raise BuildError(f"sample scale must be in (0, 1], got {scale}")
    if int(seed) != seed or seed < 0:
        raise BuildError(f"sample seed must be a non-negative integer, got {seed}")
    rng = np.random.default_rng([int(seed), 0x5A3])
    counts = cell_counts(scale)
    members: List[Tuple[str, str, str, str]] = []
    lines: Dict[str, List[str]] = {split: [] for split in SPLITS}
    for scene in SCENES:
        for word in CLASS_WORDS:
            n_train, n_test = counts["train", scene, word], counts["test", scene, word]
            # Train and test numbers interleave within the folder, as in the archive;
            # the permutation's order is also the line order inside the cell.
            numbers = rng.permutation(n_train + n_test)
            for split, chosen in (("train", numbers[:n_train]), ("test", numbers[n_train:])):
                for number in chosen:
                    clip_id = f"{scene}/{word}/{number:04d}"
                    lines[split].append(f"{clip_id} {word}")
                    members.append((clip_id, scene, word, split))
    members.sort()
    frames = frame_counts(len(members), rng)
    clips = tuple(PlannedClip(*member, int(n)) for member, n in zip(members, frames))
    return SamplePlan(scale, int(seed), clips, {split: tuple(v) for split, v in lines.items()})


def split_files(plan: SamplePlan) -> Dict[str, bytes]:
    """Archive path -> bytes of every split file: All_scenes and the 22 per-scene files."""
    setups = PART_FOLDERS["setups"]
    files = {}
    for split in SPLITS:
        lines = plan.split_lines[split]
        files[f"{setups}/All_scenes/{SPLIT_FILE_NAMES[split]}"] = _text(lines)
        for scene in _scenes_of(plan):
            prefix = scene + "/"
            files[f"{setups}/22_scenes/{split}_{scene}.csv"] = _text([ln for ln in lines if ln.startswith(prefix)])
    return files


def _scenes_of(plan: SamplePlan) -> List[str]:
    present = {clip.scene for clip in plan.clips}
    return [scene for scene in SCENES if scene in present]


def _text(lines: Iterable[str]) -> bytes:
    return "".join(line + "\n" for line in lines).encode("utf-8")


def _clip_rng(seed: int, clip_id: str, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(clip_id.encode("utf-8")), stream])


class _Renderer:
    """Renders one clip's files for the requested parts; holds the shared noise textures."""

    def __init__(self, seed: int, parts: Sequence[str]):
        self.seed, self.parts = seed, parts
        self.face_noise = faces.NoisePool(seed, (faces.FACE_SIZE, faces.FACE_SIZE))
        self.scene_noise = faces.NoisePool(seed, faces.SCENE_SIZE)
        self.codec = _video_codec() if "videos" in parts else None

    def clip_files(self, clip: PlannedClip) -> List[Tuple[str, bytes]]:
        rng = lambda stream: _clip_rng(self.seed, clip.clip_id, stream)  # noqa: E731
        look = faces.sample_look(rng(0))
        motion = rng(1)
        path = faces.motion_path(motion, clip.num_frames, faces.FACE_MARGIN)
        blinks = faces.blink_frames(motion, clip.num_frames)
        files = []
        if "faces" in self.parts:
            bases = faces.render_face_bases(look, clip.emotion)
            size = (faces.FACE_SIZE, faces.FACE_SIZE)
            frames = faces.frame_images(bases, size, faces.FACE_MARGIN, path, blinks, self.face_noise, rng(2))
            files += _frame_files(PART_FOLDERS["faces"], clip, frames)
        if "scenes" in self.parts or "videos" in self.parts:
            bases = faces.render_scene_bases(look, clip.scene, clip.emotion, rng(3))
            scene_path = np.clip(path, -faces.SCENE_MARGIN, faces.SCENE_MARGIN)
            frames = functools.partial(faces.frame_images, bases, faces.SCENE_SIZE, faces.SCENE_MARGIN, scene_path,
                                       blinks)
            if "scenes" in self.parts:
                files += _frame_files(PART_FOLDERS["scenes"], clip, frames(self.scene_noise, rng(4)))
            if "videos" in self.parts:
                # The video carries no sensor noise: an encoder would smooth it away, slowly.
                video = encode_mp4(list(frames(None, rng(4))), self.codec)
                files.append((f"{PART_FOLDERS['videos']}/{clip.clip_id}.mp4", video))
        return files


def _frame_files(folder: str, clip: PlannedClip, frames) -> List[Tuple[str, bytes]]:
    return [(f"{folder}/{clip.clip_id}/{i:02d}.jpg", faces.encode_jpeg(frame)) for i, frame in enumerate(frames)]


def _video_codec() -> str:
    import av

    for codec in ("libx264", "mpeg4"):
        if codec in av.codecs_available:
            return codec
    raise BuildError("PyAV has neither libx264 nor mpeg4 encoders; cannot write the videos part")


def encode_mp4(frames: Sequence, codec: str = "libx264") -> bytes:
    """An mp4 of the frames (PIL images), one video frame each, at VIDEO_RATE fps."""
    import av

    buffer = io.BytesIO()
    # bitexact keeps library versions out of the file; one thread keeps x264's
    # output independent of the machine's core count.
    with av.open(buffer, mode="w", format="mp4", options={"fflags": "+bitexact"}) as container:
        stream = container.add_stream(codec, rate=VIDEO_RATE)
        stream.width, stream.height = frames[0].size
        stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": "28", "preset": "ultrafast", "threads": "1"}
        else:
            stream.options = {"qscale": "8", "threads": "1"}
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_image(image)):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()


def _check_parts(parts: Iterable[str]) -> Tuple[str, ...]:
    parts = tuple(parts)
    unknown = sorted(set(parts) - set(PART_KINDS))
    if unknown or not parts:
        raise BuildError(f"sample parts must be some of {', '.join(PART_KINDS)}; got {', '.join(parts) or 'none'}")
    return tuple(kind for kind in PART_KINDS if kind in parts)


def restrict_to_scenes(plan: SamplePlan, scenes: Sequence[str]) -> SamplePlan:
    """The plan's clips and split lines of some scenes only; numbers and frame counts unchanged."""
    unknown = sorted(set(scenes) - set(SCENES))
    if unknown or not scenes:
        raise BuildError(f"unknown sample scenes {unknown or 'none'}; choose among the 22 of taxonomy.SCENES")
    keep = set(scenes)
    clips = tuple(c for c in plan.clips if c.scene in keep)
    lines = {split: tuple(ln for ln in v if ln.split("/", 1)[0] in keep) for split, v in plan.split_lines.items()}
    return SamplePlan(plan.scale, plan.seed, clips, lines)


_worker_renderer: Optional[_Renderer] = None


def _start_worker(seed: int, parts: Sequence[str]) -> None:
    global _worker_renderer
    _worker_renderer = _Renderer(seed, parts)


def _render_in_worker(clip: PlannedClip) -> List[Tuple[str, bytes]]:
    return _worker_renderer.clip_files(clip)


def _rendered_clips(clips: Sequence[PlannedClip], seed: int, parts: Sequence[str],
                    workers: int) -> Iterator[List[Tuple[str, bytes]]]:
    """Every clip's files, in plan order; rendered by worker processes when workers > 1."""
    if workers <= 1 or len(clips) < 8:
        yield from map(_Renderer(seed, parts).clip_files, clips)
        return
    # Not fork: a worker forked while another thread of this process holds a lock (seen in CI: a
    # Pillow call in a forked worker waited for ever after the process had run threaded code) never
    # gets it. forkserver forks from a clean single-threaded server; spawn where it is missing.
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
    with context.Pool(workers, _start_worker, (seed, tuple(parts))) as pool:
        yield from pool.imap(_render_in_worker, clips, chunksize=2)


def write_sample_archive(out, *, scale: Optional[float] = None, seed: int = 0,
                         parts: Sequence[str] = PART_KINDS, zip: bool = False,
                         scenes: Optional[Sequence[str]] = None, workers: Optional[int] = None,
                         progress: bool = False) -> SampleSummary:
    """Write a synthetic FERV39k-shaped archive to ``out`` (absent or empty), marked by ``SAMPLE_MARKER``.

    If ``out`` already holds a complete sample of the same settings (its marker
    says so), nothing is written and the summary says ``reused``; any other
    non-empty folder is refused.

    scale: fraction of the official clips per (split, scene, class) cell,
    at least one each (default DEFAULT_SCALE); 1.0 gives the official counts
    and frames-per-clip histogram. parts: any of faces, scenes, videos; split
    files are always written. zip: pack as a drive download (see ZipSink).
    scenes: write only these scenes' clips (a quick, small archive; its files
    are byte-identical to the same files of the full archive). workers:
    rendering processes (default: the CPU count, at most 4); the bytes do not
    depend on it.
    """
    started = time.perf_counter()
    parts = _check_parts(parts)
    plan = plan_sample(scale, seed)
    if scenes is not None:
        plan = restrict_to_scenes(plan, scenes)
    workers = min(4, os.cpu_count() or 1) if workers is None else int(workers)
    root = Path(out)
    settings = {"scale": plan.scale, "seed": plan.seed, "parts": list(parts), "zip": bool(zip),
                "scenes": None if scenes is None else sorted(scenes)}
    if prepare_sample_out(root, settings):
        return _summary(root, plan, parts, bool(zip), started, reused=True)
    sink = ZipSink(root) if zip else FolderSink(root)
    rendering = _rendered_clips(plan.clips, plan.seed, parts, workers)
    rendered: Iterable[List[Tuple[str, bytes]]] = rendering
    if progress:
        from tqdm.auto import tqdm

        rendered = tqdm(rendering, total=len(plan.clips), desc="synthetic clips", unit="clip")
    try:
        for files in rendered:
            for name, data in files:
                sink.put(name, data)
        for name, data in sorted(split_files(plan).items()):
            sink.put(name, data)
    finally:
        rendering.close()  # stops the worker pool at once if writing failed
        sink.close()
    write_sample_marker(root, settings, complete=True)
    return _summary(root, plan, parts, bool(zip), started)


def _summary(root: Path, plan: SamplePlan, parts: Tuple[str, ...], zipped: bool, started: float,
             reused: bool = False) -> SampleSummary:
    on_disk = [p.stat().st_size for p in root.rglob("*") if p.is_file() and p.name != SAMPLE_MARKER]
    return SampleSummary(
        root=root,
        clips={split: sum(1 for c in plan.clips if c.split == split) for split in SPLITS},
        frames=sum(c.num_frames for c in plan.clips),
        files=len(on_disk),
        bytes=sum(on_disk),
        parts=parts,
        zipped=zipped,
        seconds=time.perf_counter() - started,
        reused=reused,
    )


def run_sample_command(args) -> int:
    """``ferv39k-hf sample OUT``: write the archive and print what was written."""
    summary = write_sample_archive(args.out, scale=args.scale, seed=args.seed, parts=args.parts, zip=args.zip,
                                   progress=True)
    clips = summary.clips
    if summary.reused:
        print(f"{summary.root} already holds this synthetic sample archive (its {SAMPLE_MARKER} says so): "
              f"{clips['train']} train, {clips['test']} test clips; nothing written")
        return 0
    print(f"wrote a synthetic FERV39k-shaped archive (no FERV39k data) to {summary.root}")
    print(f"  clips: {clips['train']} train, {clips['test']} test; {summary.frames:,} frames per part")
    packing = " (zipped as a drive download)" if summary.zipped else ""
    print(f"  parts: {', '.join(summary.parts)} and split files{packing}")
    print(f"  size on disk: {summary.bytes / 1e6:.1f} MB in {summary.files:,} files ({summary.seconds:.1f} s)")
    return 0
