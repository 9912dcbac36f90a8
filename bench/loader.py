"""Clip loader throughput against a folder-of-JPEG baseline and the JPEG decode floor.

    python bench/loader.py                       # synthetic sample archive, built in a temp dir
    python bench/loader.py --archive ROOT --dataset DIR --clips 64 --json loader.json

On one pinned CPU (torch.set_num_threads(1)), for 16-frame clips at 224, 160 and
112 pixels, train and eval sampling, every method runs on the same clips:

- loader: the built dataset read through ``undecoded_frames``,
  ``with_transform(VideoClipTransform(...))`` and a DataLoader with
  ``collate_fn=collate_clips``, as the training script runs it (JPEG decoding by
  simplejpeg when installed; "loader-pil" forces Pillow; crop, resize, flip and
  normalise by the C kernel when it was built, and "loader-torch-ops" times the
  same loader with torch's operations instead);
- loader-streaming: as many clips streamed from the folder's Parquet shards
  (``ferv39k_hf.dataset.streaming.stream`` with a shuffle buffer, no Arrow
  cache), whole batches of rows handed to the same transform by
  ``StreamCollator``, as ``run_video_classification.py --streaming true`` runs it;
  its clips per second (steady rate of a long epoch, see ``streaming_loader``)
  are printed as a ratio to the map-style loader's;
- baseline: the way published FERV39k code loads a clip: list the unpacked clip
  folder, sort, pick the frames, PIL open, convert RGB, crop/resize, stack,
  ToTensor and Normalize per frame with torch;
- floor: decoding exactly the sampled JPEGs from bytes already in memory, and
  nothing else (by Pillow into its own pixel buffer, by simplejpeg into one
  reused array).

It prints milliseconds per clip (CPU time of the process: steady on a shared
machine), the speedup over the baseline and the ratio to the floor of the same
decoder (by CPU and by wall-clock time), then the throughput with 2 DataLoader
workers. For ``on_device=True`` it times the CPU's share (sample and decode,
through the same DataLoader) and, apart, the GPU's share (DeviceFinish) run on
this CPU, which says nothing of its cost on a GPU.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))
from baselines import clip_folders, decode_floor, folder_baseline, sampled_frame_bytes  # noqa: E402
from common import best_of_rounds, cpus, environment, pin_to_one_cpu, write_json  # noqa: E402

SIZES = (224, 160, 112)
MODES = ("train", "eval")
TARGET_SPEEDUP = 2.5  # issue 6: at least this much faster than the folder baseline at 224
TARGET_FLOOR_RATIO = 1.5  # issue 6: at most this much slower than decoding the sampled JPEGs
TARGET_STREAMING = 0.9  # issue 16: streaming delivers at least this share of the map-style loader's clips/s


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--archive", help="an unpacked archive root (default: write the synthetic sample)")
    p.add_argument("--dataset", help="a folder made by 'ferv39k-hf build' of that archive (default: build one)")
    p.add_argument("--scale", type=float, default=None, help="sample archive scale (default: the default sample)")
    p.add_argument("--clips", type=int, default=48, help="train clips to time (default 48)")
    p.add_argument("--batch-size", type=int, default=8, help="clips per transform call (default 8)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds; the best counts (default 5)")
    p.add_argument("--num-frames", type=int, default=16)
    p.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    p.add_argument("--sampling", choices=["segment", "window"], default="segment")
    p.add_argument("--cpu", type=int, default=None, help="CPU to pin to (default: the last one allowed)")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers for the multi-process line (0: skip)")
    p.add_argument("--json", metavar="OUT", help="write the numbers to this JSON file")
    return p.parse_args(argv)


# --- inputs -----------------------------------------------------------------------------------------


def prepare_inputs(args: argparse.Namespace, workdir: Path):
    """(archive root, built dataset folder): the given ones, or a fresh synthetic pair in ``workdir``."""
    archive = Path(args.archive) if args.archive else None
    if archive is None:
        from ferv39k_hf.synthetic import write_sample_archive

        archive = workdir / "FERV39k"
        print(f"writing a synthetic sample archive to {archive} ...", flush=True)
        write_sample_archive(archive, scale=args.scale, seed=0, parts=("faces",))
    dataset = Path(args.dataset) if args.dataset else None
    if dataset is None:
        from ferv39k_hf.dataset.export import build_dataset_folder

        dataset = workdir / "ferv39k"
        print(f"building the faces dataset folder {dataset} ...", flush=True)
        build_dataset_folder(archive, dataset, config="faces")
    return archive, dataset


# --- the three methods ------------------------------------------------------------------------------


def transform_loader(dataset, transform, batch_size: int) -> Callable[[], None]:
    """One epoch of ``dataset.with_transform(transform)`` through a DataLoader, as Trainer runs it
    with ``dataloader_num_workers=0`` and ``data_collator=collate_clips``."""
    from torch.utils.data import DataLoader

    from ferv39k_hf.clips.collate import collate_clips

    loader = DataLoader(dataset.with_transform(transform), batch_size=batch_size, collate_fn=collate_clips)

    def epoch() -> None:
        for _ in loader:
            pass

    return epoch


def streaming_loader(dataset_dir: Path, clips: int, transform, batch_size: int) -> Callable[[], None]:
    """The next ``clips`` clips of the training split streamed from its Parquet shards without end
    (shuffled through a 1024-row buffer, a new epoch reseeded when the split runs out), batches made by
    ``StreamCollator``: the steady rate of a long epoch. A timed call of ``clips`` rows that restarted
    the stream each time would charge every call the stream's start (open the files, fill the
    buffer), which a real epoch of thousands of rows per process pays once."""
    import itertools

    from ferv39k_hf.dataset.streaming import stream
    from ferv39k_hf.training.streamloader import StreamCollator, StreamLoader

    rows = stream(dataset_dir, "train", shuffle_buffer=1024, seed=0)
    loader = StreamLoader(rows, batch_size=batch_size, collate_fn=StreamCollator(transform))

    def endless():
        for epoch in itertools.count():
            loader.set_epoch(epoch)
            yield from loader

    batches = endless()

    def epoch() -> None:
        seen = 0
        while seen < clips:
            seen += next(batches)["pixel_values"].shape[0]

    return epoch


def device_finish(dataset, transform, batch_size: int) -> Callable[[], None]:
    """The ``DeviceFinish`` step of ``on_device`` batches (made before timing), run here on the CPU."""
    finish = transform.device_finish()
    batches = [transform(dataset[start : start + batch_size]) for start in range(0, len(dataset), batch_size)]
    batches = [{key: value.clone() for key, value in batch.items()} for batch in batches]

    def epoch() -> None:
        for batch in batches:
            finish(batch["pixel_values"], batch["crop_boxes"], batch["flips"])

    return epoch


def dataloader_clips_per_second(dataset, transform, batch_size: int, workers: int, min_clips: int,
                                collate=None) -> float:
    """Clips/s of a torch DataLoader with ``workers`` processes over the transformed dataset."""
    from torch.utils.data import DataLoader

    repeats = max(1, -(-min_clips // len(dataset)))
    data = dataset.select(list(range(len(dataset))) * repeats).with_transform(transform)
    loader = DataLoader(data, batch_size=batch_size, num_workers=workers, persistent_workers=workers > 0,
                        collate_fn=collate)
    for _ in loader:  # start the workers and warm them
        break
    start = time.perf_counter()
    clips = sum(batch["pixel_values"].shape[0] for batch in loader)
    return clips / (time.perf_counter() - start)


# --- the run ----------------------------------------------------------------------------------------


def kernel_state() -> str:
    """Whether the C kernel is built, and whether its AVX2 or its portable passes run."""
    from ferv39k_hf.clips.geometry import fused_kernel

    if fused_kernel() is None:
        return "NOT built: the loader runs its torch path"
    return "built, AVX2 passes" if fused_kernel().simd() else "built, portable passes (no AVX2 here)"


def measure(args: argparse.Namespace, archive: Path, dataset_dir: Path, cache_dir: Path) -> dict:
    import datasets

    from ferv39k_hf import VideoClipTransform, undecoded_frames
    from ferv39k_hf.clips.geometry import fused_kernel_available
    from ferv39k_hf.clips.video import simplejpeg_available

    all_cpus = os.sched_getaffinity(0)
    cpu = pin_to_one_cpu(args.cpu)
    train_split = undecoded_frames(datasets.load_dataset(str(dataset_dir), split="train", cache_dir=str(cache_dir)))
    clips = train_split.select(range(min(args.clips, len(train_split))))
    folders = clip_folders(archive, clips["clip_id"])
    frame_bytes = sampled_frame_bytes(clips, args.num_frames, args.sampling)
    decoders = ["pil"] + (["simplejpeg"] if simplejpeg_available() else [])
    n = len(clips)
    print(f"{n} clips, {sum(map(len, frame_bytes))} sampled frames, pinned to CPU {cpu}, "
          f"best of {args.rounds} interleaved rounds; C kernel (ferv39k_hf.clips.ckernel) "
          f"{kernel_state()}\n", flush=True)

    rows = []
    for size in args.sizes:
        for mode in MODES:
            train = mode == "train"

            def transform(decoder: str, on_device: bool = False, fused=None) -> "VideoClipTransform":
                return VideoClipTransform(args.num_frames, size, train=train, sampling=args.sampling, seed=0,
                                          decoder=decoder, on_device=on_device, fused=fused)

            methods = {"baseline": folder_baseline(folders, args.num_frames, size, train, args.sampling)}
            for decoder in decoders:
                methods[f"floor-{decoder}"] = decode_floor(frame_bytes, decoder)
                methods[f"loader-{decoder}"] = transform_loader(clips, transform(decoder), args.batch_size)
            methods["loader-streaming"] = streaming_loader(dataset_dir, n, transform(decoders[-1]), args.batch_size)
            if fused_kernel_available():  # the same loader with torch's crop, resize, flip and normalise
                methods["loader-torch-ops"] = transform_loader(clips, transform(decoders[-1], fused=False),
                                                               args.batch_size)
            # on_device: the CPU's share (sample, decode) through the same DataLoader; the GPU's share
            # (crop, resize, flip, normalise) timed apart on this CPU, which is far slower at it than a GPU
            device_tf = transform(decoders[-1], on_device=True)
            methods["loader-on-device"] = transform_loader(clips, device_tf, args.batch_size)
            methods["device-finish-on-cpu"] = device_finish(clips, device_tf, args.batch_size)
            best = best_of_rounds(methods, args.rounds)
            row = {"size": size, "mode": mode, "decoder": decoders[-1]}
            for clock in ("cpu", "wall"):
                seconds = {name: times[clock] for name, times in best.items()}
                row[clock] = summarise(seconds, n, decoders[-1])
            rows.append(row)
            print_row(row, decoders)

    print_targets(rows)
    workers = []
    if args.workers > 0:
        from ferv39k_hf.clips.collate import collate_clips

        with cpus(all_cpus):
            for size in args.sizes:
                tf = VideoClipTransform(args.num_frames, size, train=True, sampling=args.sampling, seed=0)
                rates = {name: dataloader_clips_per_second(clips, tf, args.batch_size, args.workers, 4 * n, fn)
                         for name, fn in (("collate_clips", collate_clips), ("default_collate", None))}
                device_tf = VideoClipTransform(args.num_frames, size, train=True, sampling=args.sampling, seed=0,
                                               on_device=True)
                rates["on_device"] = dataloader_clips_per_second(clips, device_tf, args.batch_size, args.workers,
                                                                 4 * n, collate_clips)
                workers.append({"size": size, "mode": "train", "workers": args.workers, "cpus": len(all_cpus),
                                "clips_per_s": rates})
                print(f"DataLoader, {args.workers} workers on {len(all_cpus)} CPUs, {size} train: "
                      f"{rates['collate_clips']:6.1f} clips/s with collate_clips, "
                      f"{rates['default_collate']:6.1f} with the default collate, "
                      f"{rates['on_device']:6.1f} on_device (CPU share)", flush=True)
    return {"clips": n, "cpu": cpu, "rounds": args.rounds, "batch_size": args.batch_size,
            "num_frames": args.num_frames, "sampling": args.sampling, "rows": rows, "dataloader": workers,
            "targets": {"speedup_vs_baseline": TARGET_SPEEDUP, "floor_ratio": TARGET_FLOOR_RATIO,
                        "streaming_vs_loader": TARGET_STREAMING},
            "environment": environment()}


def summarise(seconds: Dict[str, float], clips: int, decoder: str) -> dict:
    """Per-clip milliseconds, loader throughput and the two ratios the issue sets targets for."""
    loader, pil_loader = seconds[f"loader-{decoder}"], seconds["loader-pil"]
    return {
        "ms_per_clip": {name: 1e3 * value / clips for name, value in seconds.items()},
        "clips_per_s": clips / loader,
        "speedup_vs_baseline": seconds["baseline"] / loader,
        "floor_ratio": loader / seconds[f"floor-{decoder}"],
        "pil_speedup_vs_baseline": seconds["baseline"] / pil_loader,
        "pil_floor_ratio": pil_loader / seconds["floor-pil"],
        "streaming_vs_loader": loader / seconds["loader-streaming"],
        "on_device_speedup_vs_baseline": seconds["baseline"] / seconds["loader-on-device"],
        "on_device_floor_ratio": seconds["loader-on-device"] / seconds[f"floor-{decoder}"],
        "torch_ops_floor_ratio": (seconds["loader-torch-ops"] / seconds[f"floor-{decoder}"]
                                  if "loader-torch-ops" in seconds else None),
    }


def print_targets(rows: Sequence[dict]) -> None:
    """Say, for 224-pixel clips, whether the issue's two targets hold (CPU-time ratios)."""
    for row in rows:
        if row["size"] != 224:
            continue
        cpu = row["cpu"]
        speedup_ok = cpu["speedup_vs_baseline"] >= TARGET_SPEEDUP
        floor_ok = cpu["floor_ratio"] <= TARGET_FLOOR_RATIO
        print(f"target 224 {row['mode']}: >= {TARGET_SPEEDUP}x baseline: {'met' if speedup_ok else 'NOT met'} "
              f"({cpu['speedup_vs_baseline']:.2f}x); <= {TARGET_FLOOR_RATIO}x {row['decoder']} floor: "
              f"{'met' if floor_ok else 'NOT met'} ({cpu['floor_ratio']:.2f}x); on_device CPU share: "
              f"{cpu['on_device_speedup_vs_baseline']:.2f}x baseline, {cpu['on_device_floor_ratio']:.2f}x floor")
    for row in rows:
        ratio = row["cpu"]["streaming_vs_loader"]
        print(f"target {row['size']} {row['mode']}: streaming >= {TARGET_STREAMING}x the map-style loader's clips/s: "
              f"{'met' if ratio >= TARGET_STREAMING else 'NOT met'} ({ratio:.2f}x, wall "
              f"{row['wall']['streaming_vs_loader']:.2f}x)")
    print(flush=True)


def print_row(row: dict, decoders: Sequence[str]) -> None:
    """One line per size and mode: CPU-time milliseconds per clip, then the ratios by both clocks."""
    cpu, wall, decoder = row["cpu"], row["wall"], row["decoder"]
    ms = cpu["ms_per_clip"]
    parts = [f"{row['size']:>3} {row['mode']:<5} ms/clip: baseline {ms['baseline']:6.2f}"]
    parts += [f"floor-{d} {ms['floor-' + d]:5.2f} loader-{d} {ms['loader-' + d]:5.2f}" for d in decoders]
    parts.append(f"| {cpu['clips_per_s']:6.1f} clips/s | {decoder}: {cpu['speedup_vs_baseline']:.2f}x baseline, "
                 f"{cpu['floor_ratio']:.2f}x floor (wall {wall['speedup_vs_baseline']:.2f}x, "
                 f"{wall['floor_ratio']:.2f}x)")
    if decoder != "pil":
        parts.append(f"| Pillow only: {cpu['pil_speedup_vs_baseline']:.2f}x baseline, "
                     f"{cpu['pil_floor_ratio']:.2f}x floor")
    print("  ".join(parts), flush=True)
    if cpu["torch_ops_floor_ratio"] is not None:
        print(f"{'':>9} torch ops in place of the C kernel: {ms['loader-torch-ops']:5.2f} ms/clip = "
              f"{cpu['torch_ops_floor_ratio']:.2f}x floor", flush=True)
    print(f"{'':>9} streaming: {ms['loader-streaming']:5.2f} ms/clip = {cpu['streaming_vs_loader']:.2f}x the "
          f"map-style loader's clips/s (wall {wall['streaming_vs_loader']:.2f}x)", flush=True)
    print(f"{'':>9} on_device: CPU share {ms['loader-on-device']:5.2f} ms/clip = "
          f"{cpu['on_device_speedup_vs_baseline']:.2f}x baseline, {cpu['on_device_floor_ratio']:.2f}x floor; "
          f"its GPU share run on this CPU {ms['device-finish-on-cpu']:5.2f} ms/clip", flush=True)


def main(argv=None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ferv39k-bench-") as tmp:
        archive, dataset_dir = prepare_inputs(args, Path(tmp))
        result = measure(args, archive, dataset_dir, Path(tmp) / "cache")  # datasets' Arrow copy goes with it
    if args.json:
        write_json(args.json, result)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
