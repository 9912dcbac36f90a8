"""Bootstrap and paired comparison cost at the official test size, against resampling clips one by one.

The baseline is the direct bootstrap: draw (resamples x clips) clip indices and
count each resample's confusion matrix (what ``bootstrap_ci`` did before it drew
multinomial cell counts). Both run in this process, on the same predictions,
best of ``--rounds``; the ratio is what to read, not the seconds.

    python bench/bootstrap.py                      # 7,847 clips, 10,000 resamples
    python bench/bootstrap.py --clips 2000 --resamples 2000 --rounds 1
"""

from __future__ import annotations

import argparse
import time
from typing import Callable, List, Optional

import numpy as np

from ferv39k_hf.metrics import bootstrap_ci, compare
from ferv39k_hf.metrics.scoring import class_recalls


def clip_by_clip(preds: np.ndarray, refs: np.ndarray, resamples: int, seed: int) -> tuple:
    """The baseline: resample clip indices, count confusion matrices in chunks of ~32 MB of indices."""
    rng = np.random.default_rng(seed)
    n, cells = len(refs), refs * 7 + preds
    chunk = max(1, 4_000_000 // n)
    wars, uars = [], []
    for start in range(0, resamples, chunk):
        size = min(chunk, resamples - start)
        picks = cells[rng.integers(0, n, size=(size, n))] + (np.arange(size) * 49)[:, None]
        cms = np.bincount(picks.ravel(), minlength=size * 49).reshape(size, 7, 7)
        wars.append(np.trace(cms, axis1=1, axis2=2) / n)
        uars.append(np.nanmean(class_recalls(cms), axis=1))
    return np.percentile(np.concatenate(wars), [2.5, 97.5]), np.percentile(np.concatenate(uars), [2.5, 97.5])


def best_of(rounds: int, job: Callable[[], object]) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        job()
        times.append(time.perf_counter() - started)
    return min(times)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=7847, help="number of clips (default: the official test set)")
    parser.add_argument("--resamples", type=int, default=10_000, help="bootstrap resamples (default 10000)")
    parser.add_argument("--rounds", type=int, default=3, help="best of this many runs (default 3)")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    refs = rng.choice(7, size=args.clips, p=[0.19, 0.06, 0.055, 0.19, 0.25, 0.18, 0.075])
    preds = np.where(rng.random(args.clips) < 0.52, refs, rng.integers(0, 7, size=args.clips))
    other = np.where(rng.random(args.clips) < 0.8, preds, rng.integers(0, 7, size=args.clips))

    base = best_of(args.rounds, lambda: clip_by_clip(preds, refs, args.resamples, 0))
    cells = best_of(args.rounds, lambda: bootstrap_ci(predictions=preds, references=refs, resamples=args.resamples))
    paired = best_of(args.rounds, lambda: compare(predictions_a=preds, predictions_b=other, references=refs,
                                                  resamples=args.resamples))
    print(f"{args.clips} clips, {args.resamples} resamples, best of {args.rounds}")
    print(f"  clip-by-clip bootstrap (baseline)   {base:8.3f} s   1.00x")
    print(f"  bootstrap_ci (multinomial cells)    {cells:8.3f} s   {base / cells:6.1f}x faster")
    print(f"  compare (paired bootstrap + permutation + McNemar)  {paired:8.3f} s   {base / paired:6.1f}x faster")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
