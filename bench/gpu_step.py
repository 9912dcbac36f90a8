"""How many clips per second a VideoMAE training step eats, and how many loader workers keep it fed.

    python bench/gpu_step.py                         # VideoMAE-base, 16x224, bf16, on cuda
    python bench/gpu_step.py --device cpu --tiny     # a smoke run of the same code without a GPU

It times, on the device, full training steps (forward, backward, AdamW) of a
randomly initialised VideoMAE-base classifier (7 classes; the weights do not
change the cost, and no checkpoint has to be downloaded) under bf16 autocast,
for each ``--batch-sizes``; the ``DeviceFinish`` of an ``on_device`` batch and
its host-to-device copy, against the copy of the float32 batch the CPU path
sends. Then, on one pinned CPU core of the same machine, it times
``VideoClipTransform`` (CPU path and ``on_device``) over a synthetic sample
dataset, and prints how many DataLoader workers at that rate match the
step's appetite.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import environment, pin_to_one_cpu, write_json  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", help="torch device of the training step (default cuda)")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 16, 32])
    p.add_argument("--steps", type=int, default=10, help="timed steps per batch size (default 10)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (default 3)")
    p.add_argument("--tiny", action="store_true", help="a 2-layer, 32-pixel, 4-frame model (smoke test)")
    p.add_argument("--loader-clips", type=int, default=32, help="clips for the per-core loader rate (default 32)")
    p.add_argument("--json", metavar="OUT", help="write the numbers to this JSON file")
    return p.parse_args(argv)


def make_model(tiny: bool):
    from transformers import VideoMAEConfig, VideoMAEForVideoClassification

    if tiny:
        config = VideoMAEConfig(image_size=32, patch_size=16, num_frames=4, tubelet_size=2, hidden_size=32,
                                num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, num_labels=7)
    else:
        config = VideoMAEConfig(num_labels=7)  # the videomae-base architecture: 16 frames, 224, 12 x 768
    return VideoMAEForVideoClassification(config), config


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds_per_call(fn, device, warmup: int, calls: int) -> float:
    """Mean seconds of ``calls`` calls of ``fn`` after ``warmup`` untimed ones, device work included."""
    for _ in range(warmup):
        fn()
    _sync(device)
    started = time.perf_counter()
    for _ in range(calls):
        fn()
    _sync(device)
    return (time.perf_counter() - started) / calls


def step_rate(model, config, device, batch_size: int, steps: int, warmup: int) -> Dict[str, float]:
    """Clips per second of full training steps at ``batch_size``, bf16 autocast."""
    import torch

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    frames, size = config.num_frames, config.image_size
    pixels = torch.randn(batch_size, frames, 3, size, size, device=device)
    labels = torch.randint(0, 7, (batch_size,), device=device)

    def one_step() -> None:
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
            loss = model(pixel_values=pixels, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    seconds = seconds_per_call(one_step, device, warmup, steps)
    return {"batch_size": batch_size, "seconds_per_step": seconds, "clips_per_s": batch_size / seconds}


def transfer_and_finish(config, device, batch_size: int, rounds: int = 10) -> Dict[str, float]:
    """Milliseconds per batch: copying the CPU path's float32 batch to the device, copying an on_device
    uint8 batch, and DeviceFinish on the device."""
    import torch

    from ferv39k_hf import DeviceFinish

    frames, size = config.num_frames, config.image_size
    pin = device.type == "cuda"
    floats = torch.randn(batch_size, frames, 3, size, size).pin_memory() if pin else torch.randn(
        batch_size, frames, 3, size, size)
    uint8 = torch.randint(0, 256, (batch_size, frames, size, size, 3), dtype=torch.uint8)
    uint8 = uint8.pin_memory() if pin else uint8
    crop = int(size * 0.8)
    boxes = torch.tensor([[0, 0, crop, crop]] * batch_size)
    flips = torch.tensor([i % 2 == 0 for i in range(batch_size)])
    finish = DeviceFinish(size)

    def timed(fn) -> float:
        return 1e3 * seconds_per_call(fn, device, 1, rounds)

    on_device = uint8.to(device)
    return {
        "batch_size": batch_size,
        "copy_float32_ms": timed(lambda: floats.to(device, non_blocking=True)),
        "copy_uint8_ms": timed(lambda: uint8.to(device, non_blocking=True)),
        "device_finish_ms": timed(lambda: finish(on_device, boxes.to(device), flips.to(device))),
    }


def loader_rates(config, clips: int) -> Dict[str, float]:
    """Clips per second on one pinned core: the CPU path and the on_device CPU share (training sampling)."""
    import datasets
    import torch

    from ferv39k_hf import VideoClipTransform, collate_clips, undecoded_frames
    from ferv39k_hf.export import build_dataset_folder
    from ferv39k_hf.synthetic import write_sample_archive

    rates = {}
    with tempfile.TemporaryDirectory(prefix="ferv39k-gpu-step-") as tmp:
        write_sample_archive(Path(tmp) / "archive", seed=0, parts=("faces",))
        build_dataset_folder(Path(tmp) / "archive", Path(tmp) / "built", config="faces")
        split = undecoded_frames(datasets.load_dataset(str(Path(tmp) / "built"), split="train"))
        split = split.select(range(min(clips, len(split))))
        before, threads = os.sched_getaffinity(0), torch.get_num_threads()
        pin_to_one_cpu()
        try:
            for name, on_device in (("cpu_path", False), ("on_device", True)):
                transform = VideoClipTransform(config.num_frames, config.image_size, train=True, seed=0,
                                               on_device=on_device)
                loader = torch.utils.data.DataLoader(split.with_transform(transform), batch_size=8,
                                                     collate_fn=collate_clips)
                best = float("inf")
                for _ in range(3):
                    started = time.process_time()
                    for _ in loader:
                        pass
                    best = min(best, time.process_time() - started)
                rates[name] = len(split) / best
        finally:
            os.sched_setaffinity(0, before)
            torch.set_num_threads(threads)
    return rates


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device here: pass --device cpu --tiny for a smoke run")
    model, config = make_model(args.tiny)
    model.to(device).train()
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"VideoMAE {'tiny' if args.tiny else 'base'}: {config.num_frames}x{config.image_size}, bf16 autocast, "
          f"on {device_name}", flush=True)
    steps: List[dict] = []
    for batch_size in args.batch_sizes:
        try:
            rate = step_rate(model, config, device, batch_size, args.steps, args.warmup)
        except torch.OutOfMemoryError:
            print(f"batch {batch_size}: out of memory", flush=True)
            break
        rate.update(transfer_and_finish(config, device, batch_size))
        steps.append(rate)
        print(f"batch {batch_size:>3}: {rate['clips_per_s']:8.1f} clips/s ({1e3 * rate['seconds_per_step']:.1f} ms/step);"
              f" copy float32 {rate['copy_float32_ms']:.2f} ms, uint8 {rate['copy_uint8_ms']:.2f} ms,"
              f" DeviceFinish {rate['device_finish_ms']:.2f} ms per batch", flush=True)
    if not steps:
        raise SystemExit("no batch size fitted in memory")
    appetite = max(step["clips_per_s"] for step in steps)
    rates = loader_rates(config, args.loader_clips)
    workers = {name: appetite / rate for name, rate in rates.items()}
    for name, rate in rates.items():
        print(f"loader {name}: {rate:.1f} clips/s per core -> {workers[name]:.1f} workers keep "
              f"{appetite:.0f} clips/s fed", flush=True)
    if args.json:
        write_json(args.json, {"device": device_name, "tiny": args.tiny, "steps": steps, "loader_clips_per_s": rates,
                               "workers_needed": workers, "environment": environment()})
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
