"""Build cost against its floor, at three archive sizes, with peak memory and disk footprint.

The floor is the least any build must do with the same bytes: read every
face-crop file once and write all of them once into a single file, flushed
to disk (one write per file as it is read; a stricter variant batches the
writes into 8 MB ones, and its ratio is printed too). All run on one core,
interleaved, best of ``--rounds``. Peak memory
is the peak anonymous resident memory of a child process doing only that job:
the build, and a full pass over the training split through VideoClipTransform.

    python bench/build.py                      # scales 0.005 0.02 0.05 of the official counts
    python bench/build.py --scales 0.01 --json bench/out/build.json --plot bench/out/build.png
    python bench/build.py --cpu 0                # pin to CPU 0 (default: the last CPU allowed)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

# Peak memory is the peak of anonymous resident memory (RssAnon), sampled every
# 10 ms: ru_maxrss would also count the pages of memory-mapped Arrow files that
# a pass reads, which the kernel drops at will and which are not the process's own.
_SAMPLER = r"""
import threading, time
def _anon_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 1024
PEAK = [0.0]
def _sample():
    while True:
        PEAK[0] = max(PEAK[0], _anon_mb())
        time.sleep(0.01)
threading.Thread(target=_sample, daemon=True).start()
"""

CHILD_BUILD = _SAMPLER + r"""
import json, os, sys, time
os.sched_setaffinity(0, {int(sys.argv[4])})
from ferv39k_hf.dataset.export import build_dataset_folder
started = time.perf_counter()
build_dataset_folder(sys.argv[1], sys.argv[2], overwrite=True, frames=sys.argv[3])
PEAK[0] = max(PEAK[0], _anon_mb())
print(json.dumps({"seconds": time.perf_counter() - started, "peak_mb": PEAK[0]}))
"""

# load_dataset converts the Parquet folder into datasets' Arrow cache once; the
# pass is measured in a second process that only reads that cache.
CHILD_PREPARE = r"""
import os, sys
os.environ["HF_DATASETS_CACHE"] = sys.argv[2]
import datasets
datasets.load_dataset(sys.argv[1], split="train")
print("{}")
"""

CHILD_PASS = _SAMPLER + r"""
import json, os, sys, time
os.sched_setaffinity(0, {int(sys.argv[3])})
os.environ["HF_DATASETS_CACHE"] = sys.argv[2]
import datasets, torch
import ferv39k_hf
torch.set_num_threads(1)
ds = ferv39k_hf.undecoded_frames(datasets.load_dataset(sys.argv[1], split="train"))
ds = ds.with_transform(ferv39k_hf.VideoClipTransform(num_frames=16, size=224, train=True, seed=0))
started, clips = time.perf_counter(), 0
for start in range(0, len(ds), 8):
    clips += ds[start:start + 8]["pixel_values"].shape[0]
PEAK[0] = max(PEAK[0], _anon_mb())
print(json.dumps({"seconds": time.perf_counter() - started, "clips": clips, "peak_mb": PEAK[0]}))
"""


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _settle(path: Path) -> None:
    """Remove ``path`` if it is there and flush every dirty page to disk."""
    if path.exists():
        path.unlink()
    os.sync()


def floor_copy_batched(files: List[Path], target: Path, chunk: int = 8 << 20) -> float:
    """The floor with its writes batched: files read into a buffer written out every ``chunk`` bytes; seconds.

    A stricter floor than one write per file: it costs only the reads, a few
    large writes and the flush.
    """
    started = time.perf_counter()
    pending: List[bytes] = []
    size = 0
    with open(target, "wb", buffering=0) as out:
        for path in files:
            with open(path, "rb", buffering=0) as handle:
                data = handle.read()
            pending.append(data)
            size += len(data)
            if size >= chunk:
                out.write(b"".join(pending))
                pending, size = [], 0
        out.write(b"".join(pending))
        os.fsync(out.fileno())
    return time.perf_counter() - started


def floor_copy(files: List[Path], target: Path) -> float:
    """Read each file once, write all into one file, flush it to disk; seconds."""
    started = time.perf_counter()
    with open(target, "wb") as out:
        for path in files:
            with open(path, "rb") as handle:
                out.write(handle.read())
        out.flush()
        os.fsync(out.fileno())
    return time.perf_counter() - started


def run_child(code: str, args: List[str]) -> Dict:
    """Run a child Python that prints one JSON line with its seconds and peak resident memory (MB)."""
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"child failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if "peak_mb" in result:
        result["peak_mb"] = round(result["peak_mb"], 1)
    return result


def measure_size(scale: float, work: Path, cpu: int, rounds: int) -> Dict:
    from ferv39k_hf.synthetic import write_sample_archive

    archive = work / f"archive-{scale}"
    summary = write_sample_archive(archive, scale=scale, seed=0, parts=("faces",))
    files = sorted((archive / "2_ClipsforFaceCrop").rglob("*.jpg"))
    out = work / f"built-{scale}"
    floor_s, batched_s, build_s, peaks = [], [], [], []
    for _ in range(rounds):
        # each method starts with no dirty pages left by the one before, whose writeback would throttle it
        _settle(work / "floor.bin")
        floor_s.append(floor_copy(files, work / "floor.bin"))
        _settle(work / "floor.bin")
        batched_s.append(floor_copy_batched(files, work / "floor.bin"))
        _settle(work / "floor.bin")
        shutil.rmtree(out, ignore_errors=True)  # removing an old folder is not the build's cost
        os.sync()
        child = run_child(CHILD_BUILD, [str(archive), str(out), "copy", str(cpu)])
        build_s.append(child["seconds"])
        peaks.append(child["peak_mb"])
    _settle(work / "floor.bin")
    source = sum(f.stat().st_size for f in files)
    reference = work / f"reference-{scale}"
    run_child(CHILD_BUILD, [str(archive), str(reference), "reference", str(cpu)])
    cache = work / f"cache-{scale}"
    run_child(CHILD_PREPARE, [str(out), str(cache)])
    full_pass = run_child(CHILD_PASS, [str(out), str(cache), str(cpu)])
    row = {
        "scale": scale,
        "clips": sum(summary.clips.values()),
        "frames": len(files),
        "source_mb": round(source / 1e6, 1),
        "floor_s": round(min(floor_s), 3),
        "build_s": round(min(build_s), 3),
        "ratio": round(min(build_s) / min(floor_s), 3),
        "batched_floor_s": round(min(batched_s), 3),
        "batched_ratio": round(min(build_s) / min(batched_s), 3),
        "build_peak_mb": max(peaks),
        "built_mb": round(folder_bytes(out) / 1e6, 1),
        "built_over_source": round(folder_bytes(out) / source, 4),
        "reference_mb": round(folder_bytes(reference) / 1e6, 2),
        "arrow_cache_mb": round(folder_bytes(cache) / 1e6, 1),
        "pass_clips_per_s": round(full_pass["clips"] / full_pass["seconds"], 1),
        "pass_peak_mb": full_pass["peak_mb"],
    }
    for path in (archive, out, reference, cache):
        shutil.rmtree(path, ignore_errors=True)
    return row


def plot(rows: List[Dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    sizes = [r["source_mb"] for r in rows]
    left.plot(sizes, [r["build_s"] for r in rows], "o-", label="ferv39k-hf build")
    left.plot(sizes, [r["floor_s"] for r in rows], "s--", label="floor: read once, write once")
    left.set_xlabel("face-crop bytes (MB)")
    left.set_ylabel("seconds (1 core)")
    left.set_title("build cost against archive size")
    left.legend()
    right.plot(sizes, [r["build_peak_mb"] for r in rows], "o-", label="build")
    right.plot(sizes, [r["pass_peak_mb"] for r in rows], "s-", label="full pass over train")
    right.set_xlabel("face-crop bytes (MB)")
    right.set_ylabel("peak resident memory (MB)")
    right.set_ylim(bottom=0)
    right.set_title("peak memory")
    right.legend()
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scales", type=float, nargs="+", default=[0.005, 0.02, 0.05],
                        help="archive sizes as fractions of the official counts (default 0.005 0.02 0.05)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds; the best counts (default 2)")
    parser.add_argument("--workdir", help="the folder in which to make this run's own temporary folder, removed at "
                        "the end (default: the system's temporary folder)")
    parser.add_argument("--json", help="write the numbers here")
    parser.add_argument("--plot", help="write a PNG of cost and memory against size here")
    parser.add_argument("--cpu", type=int, help="the CPU to pin to (default: the last one allowed)")
    args = parser.parse_args()
    allowed = sorted(os.sched_getaffinity(0))
    cpu = allowed[-1] if args.cpu is None else args.cpu
    if cpu not in allowed:
        raise SystemExit(f"CPU {cpu} is not available to this process (allowed: {allowed})")
    os.sched_setaffinity(0, {cpu})
    if args.workdir:
        Path(args.workdir).mkdir(parents=True, exist_ok=True)
    # A folder no one else can have made (mkdtemp creates it, and fails rather than reuse one): everything
    # this run writes, and so everything it removes, is inside it.
    work = Path(tempfile.mkdtemp(prefix="ferv39k-bench-build-", dir=args.workdir))
    rows = []
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, pinned to CPU {cpu}")
    header = f"{'scale':>6} {'clips':>6} {'source MB':>10} {'floor s':>8} {'build s':>8} {'ratio':>6} " \
             f"{'batched floor s':>15} {'ratio':>6} {'build peak MB':>13} {'built/source':>12} {'ref MB':>7} " \
             f"{'cache MB':>9} {'pass peak MB':>12}"
    print(header)
    try:
        for scale in args.scales:
            row = measure_size(scale, work, cpu, args.rounds)
            rows.append(row)
            print(f"{row['scale']:>6} {row['clips']:>6} {row['source_mb']:>10} {row['floor_s']:>8} {row['build_s']:>8} "
                  f"{row['ratio']:>6} {row['batched_floor_s']:>15} {row['batched_ratio']:>6} "
                  f"{row['build_peak_mb']!s:>13} "
                  f"{row['built_over_source']:>12} {row['reference_mb']:>7} {row['arrow_cache_mb']:>9} "
                  f"{row['pass_peak_mb']!s:>12}", flush=True)
    finally:  # archives and builds of several hundred MB each: gone even when a run fails or is interrupted
        shutil.rmtree(work, ignore_errors=True)
    print("ratio = build seconds / floor seconds (target <= 1.3), the floor writing each file as it is read "
          "and, stricter, batching its writes; built/source target <= 1.02")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        measured = {"rows": rows, "cpu": platform.processor() or platform.machine()}
        Path(args.json).write_text(json.dumps(measured, indent=2))
    if args.plot:
        plot(rows, args.plot)


if __name__ == "__main__":
    main()
