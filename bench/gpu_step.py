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
step's appetite. Last, for each ``--feed-workers`` count, it times the same
training steps fed by the real input pipeline (DataLoader workers running
``VideoClipTransform`` on that dataset, pinned memory, batches moved to the
device as the Trainer moves them), for the CPU path and for ``on_device`` with
``DeviceFinish``: the worker count at which the fed rate reaches the bare
step's rate is the count that keeps the GPU from waiting on data.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

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
    p.add_argument("--feed-workers", type=int, nargs="*", default=[1, 2, 3, 4, 6, 8],
                   help="DataLoader worker counts for the fed training steps (default 1 2 3 4 6 8; none skips them)")
    p.add_argument("--no-feed-from-memory", dest="feed_from_memory", action="store_false",
                   help="skip the fed steps whose batches are made ahead and held in pinned memory (the ceiling "
                        "of feeding: copies and DeviceFinish, no workers)")
    p.add_argument("--feed-batch-size", type=int, default=32,
                   help="batch size of the fed steps (default 32; workers keep 2 batches each in shared memory)")
    p.add_argument("--feed-steps", type=int, default=30, help="timed fed steps per worker count (default 30)")
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
    draw = torch.Generator().manual_seed(batch_size)  # training-like crops: 60-100% of the side, anywhere
    sides = torch.randint(int(size * 0.6), size + 1, (batch_size, 2), generator=draw)
    corners = (torch.rand(batch_size, 2, generator=draw) * (size - sides + 1)).long()
    boxes = torch.cat([corners, corners + sides], dim=1)  # x0, y0, x1, y1
    flips = torch.tensor([i % 2 == 0 for i in range(batch_size)])
    finish = DeviceFinish(size)

    def timed(fn) -> float:
        return 1e3 * seconds_per_call(fn, device, 1, rounds)

    on_device = uint8.to(device)
    # the same function on the device as on the CPU: largest difference over the batch, in normalised units
    few = slice(0, min(batch_size, 4))
    agree = (finish(on_device[few], boxes[few].to(device), flips[few].to(device)).cpu()
             - finish(uint8[few], boxes[few], flips[few])).abs().max().item()
    return {
        "device_vs_cpu_max_abs": agree,
        "batch_size": batch_size,
        "copy_float32_ms": timed(lambda: floats.to(device, non_blocking=True)),
        "copy_uint8_ms": timed(lambda: uint8.to(device, non_blocking=True)),
        "device_finish_ms": timed(lambda: finish(on_device, boxes.to(device), flips.to(device))),
    }


@contextmanager
def sample_train_split(clips: Optional[int] = None) -> Iterator[Any]:
    """The training split of a freshly built synthetic sample (faces config), frames left undecoded."""
    import datasets

    from ferv39k_hf import undecoded_frames
    from ferv39k_hf.dataset.export import build_dataset_folder
    from ferv39k_hf.synthetic import write_sample_archive

    with tempfile.TemporaryDirectory(prefix="ferv39k-gpu-step-") as tmp:
        write_sample_archive(Path(tmp) / "archive", seed=0, parts=("faces",))
        build_dataset_folder(Path(tmp) / "archive", Path(tmp) / "built", config="faces")
        split = undecoded_frames(datasets.load_dataset(str(Path(tmp) / "built"), split="train",
                                                       cache_dir=str(Path(tmp) / "cache")))
        yield split if clips is None else split.select(range(min(clips, len(split))))


def loader_rates(config, split) -> Dict[str, float]:
    """Clips per second on one pinned core: the CPU path and the on_device CPU share (training sampling)."""
    import torch

    from ferv39k_hf import VideoClipTransform, collate_clips

    rates = {}
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


def fed_rate(model, config, device, split, batch_size: int, workers: int, on_device: bool,
             steps: int, warmup: int) -> Dict[str, float]:
    """Clips per second of training steps whose batches come from ``workers`` DataLoader workers
    (-1: from batches made ahead and held in pinned memory)."""
    import torch

    from ferv39k_hf import VideoClipTransform, collate_clips

    transform = VideoClipTransform(config.num_frames, config.image_size, train=True, seed=0, on_device=on_device)
    finish = transform.device_finish() if on_device else None
    # Workers fill workers x prefetch_factor batches ahead; untimed steps use them up, so the timed
    # steps see the pipeline's steady rate. One long epoch (shuffled passes back to back) has no
    # drain at epoch ends, as an epoch of the full dataset (a thousand batches) hardly has.
    processes, prefetch = max(workers, 0), 2
    warmup = max(warmup, processes * prefetch + 2)
    sampler = torch.utils.data.RandomSampler(split, num_samples=batch_size * (warmup + steps + processes * prefetch),
                                             generator=torch.Generator().manual_seed(0))
    loader = torch.utils.data.DataLoader(
        split.with_transform(transform), batch_size=batch_size, sampler=sampler, drop_last=True,
        collate_fn=collate_clips, num_workers=processes, pin_memory=device.type == "cuda",
        prefetch_factor=prefetch if processes else None)
    if workers < 0:  # from memory: a few batches made ahead (pinned by the loader), used in turn
        batches = itertools.cycle([batch for batch, _ in zip(loader, range(4))])
    else:
        batches = iter(loader)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    waited = [0.0]

    def one_step() -> None:
        started = time.perf_counter()
        batch = next(batches)
        waited[0] += time.perf_counter() - started
        inputs = {key: value.to(device, non_blocking=True) for key, value in batch.items()}  # as the Trainer does
        if finish is not None:
            inputs = finish.finish_inputs(inputs)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
            loss = model(pixel_values=inputs["pixel_values"], labels=inputs["labels"]).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    try:
        for _ in range(warmup):
            one_step()
        waited[0] = 0.0
        seconds = seconds_per_call(one_step, device, 0, steps)
    finally:
        batches = loader = None  # stops the workers (one_step holds batches too)
    # the training loop's wait for its next batch: where it is a large part of the step, the data
    # came late; where the rate falls short with no wait, the cost is elsewhere (copies, memory)
    return {"workers": workers, "on_device": on_device, "batch_size": batch_size,
            "clips_per_s": batch_size / seconds, "wait_ms_per_step": 1e3 * waited[0] / steps}


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
        print(f"batch {batch_size:>3}: {rate['clips_per_s']:8.1f} clips/s "
              f"({1e3 * rate['seconds_per_step']:.1f} ms/step);"
              f" copy float32 {rate['copy_float32_ms']:.2f} ms, uint8 {rate['copy_uint8_ms']:.2f} ms,"
              f" DeviceFinish {rate['device_finish_ms']:.2f} ms per batch"
              f" (vs CPU: max |diff| {rate['device_vs_cpu_max_abs']:.1e})", flush=True)
    if not steps:
        raise SystemExit("no batch size fitted in memory")
    best = max(steps, key=lambda step: step["clips_per_s"])
    appetite = best["clips_per_s"]
    fed: List[dict] = []
    with sample_train_split() as split:
        rates = loader_rates(config, split.select(range(min(args.loader_clips, len(split)))))
        workers = {name: appetite / rate for name, rate in rates.items()}
        for name, rate in rates.items():
            print(f"loader {name}: {rate:.1f} clips/s per core -> {workers[name]:.1f} workers keep "
                  f"{appetite:.0f} clips/s fed", flush=True)
        for on_device in (False, True):
            for count in ([-1] if args.feed_from_memory else []) + list(args.feed_workers):
                name = "on_device" if on_device else "cpu_path"
                source = "from pinned memory" if count < 0 else f"by {count} worker(s)"
                try:
                    rate = fed_rate(model, config, device, split, args.feed_batch_size, count, on_device,
                                    args.feed_steps, args.warmup)
                except RuntimeError as error:  # a worker killed (shared memory full), out of memory
                    print(f"fed {source}, {name}: failed: {error}", flush=True)
                    continue
                fed.append(rate)
                bare = next((step["clips_per_s"] for step in steps if step["batch_size"] == args.feed_batch_size),
                            appetite)
                print(f"fed {source}, {name}, batch {args.feed_batch_size}: "
                      f"{rate['clips_per_s']:8.1f} clips/s ({rate['clips_per_s'] / bare:.0%} of the bare step "
                      f"at that batch); waited {rate['wait_ms_per_step']:.1f} ms a step for data", flush=True)
    if args.json:
        write_json(args.json, {"device": device_name, "tiny": args.tiny, "steps": steps, "loader_clips_per_s": rates,
                               "workers_needed": workers, "fed": fed, "environment": environment()})
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
