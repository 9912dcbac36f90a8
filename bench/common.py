"""Shared benchmark plumbing: one pinned core, interleaved best-of timing, environment notes.

Benchmarks compare methods measured in the same run on the same inputs. On a
shared machine the fastest of several interleaved rounds is the number least
disturbed by other processes, so every method is timed round-robin and keeps
its best round.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from contextlib import contextmanager
from typing import Callable, Dict, Iterator, Mapping, Optional, Set


def pin_to_one_cpu(cpu: Optional[int] = None) -> int:
    """Run this process (and the threads torch starts) on one CPU; returns the CPU used."""
    allowed = sorted(os.sched_getaffinity(0))
    chosen = allowed[-1] if cpu is None else cpu
    if chosen not in allowed:
        raise SystemExit(f"CPU {chosen} is not available to this process (allowed: {allowed})")
    os.sched_setaffinity(0, {chosen})
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    return chosen


@contextmanager
def cpus(allowed: Set[int]) -> Iterator[None]:
    """Temporarily widen (or narrow) this process's CPU set, e.g. for DataLoader workers."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, allowed)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def best_of_rounds(methods: Mapping[str, Callable[[], None]], rounds: int) -> Dict[str, Dict[str, float]]:
    """Each method's fastest call in wall-clock and in CPU seconds, calling them round-robin.

    CPU time (user + system of this process) leaves out the time other processes
    held the core, so on a busy machine it is the steadier measure; on an idle,
    pinned core the two agree.
    """
    best = {name: {"wall": float("inf"), "cpu": float("inf")} for name in methods}
    for method in methods.values():  # warm caches and lazy imports outside the timing
        method()
    for _ in range(rounds):
        for name, method in methods.items():
            wall, cpu = time.perf_counter(), time.process_time()
            method()
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            best[name]["wall"] = min(best[name]["wall"], wall)
            best[name]["cpu"] = min(best[name]["cpu"], cpu)
    return best


def environment() -> Dict[str, str]:
    """Versions and machine facts worth printing next to a number."""
    info = {"python": sys.version.split()[0], "platform": platform.platform(), "cpu": _cpu_name()}
    for module in ("numpy", "PIL", "torch", "datasets", "pyarrow", "simplejpeg", "av"):
        try:
            info[module] = __import__(module).__version__
        except ImportError:
            info[module] = "absent"
    return info


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def write_json(path: str, payload: dict) -> None:
    with open(path, "w") as handle:
        json.dump(payload, handle, indent=2, sort_keys=False)
        handle.write("\n")
