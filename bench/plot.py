"""One figure for docs/performance.md from the benchmarks' JSON files.

    python bench/loader.py --json bench/out/loader.json
    python bench/build.py --json bench/out/build.json
    python bench/plot.py bench/out/loader.json bench/out/build.json --out docs/performance.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("loader_json")
    parser.add_argument("build_json")
    parser.add_argument("--out", default="docs/performance.png")
    args = parser.parse_args()
    loader = json.loads(Path(args.loader_json).read_text())
    build = json.loads(Path(args.build_json).read_text())["rows"]

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, (ax_load, ax_build, ax_mem) = plt.subplots(1, 3, figsize=(16, 4.5))
    rows = loader["rows"]
    labels = [f"{r['size']} {r['mode']}" for r in rows]
    decoder = rows[0]["decoder"]
    series = {
        "folder-of-JPEG baseline": [1e3 / r["cpu"]["ms_per_clip"]["baseline"] for r in rows],
        f"ferv39k-hf loader ({decoder})": [1e3 / r["cpu"]["ms_per_clip"][f"loader-{decoder}"] for r in rows],
        "ferv39k-hf on_device: CPU share": [1e3 / r["cpu"]["ms_per_clip"]["loader-on-device"] for r in rows],
        f"decode floor ({decoder})": [1e3 / r["cpu"]["ms_per_clip"][f"floor-{decoder}"] for r in rows],
    }
    if all("loader-torch-ops" in r["cpu"]["ms_per_clip"] for r in rows):  # the loader without the C kernel
        series = dict(list(series.items())[:2] + [("ferv39k-hf loader, torch ops", [
            1e3 / r["cpu"]["ms_per_clip"]["loader-torch-ops"] for r in rows])] + list(series.items())[2:])
    x = np.arange(len(rows))
    width = 0.8 / len(series)
    for i, (name, values) in enumerate(series.items()):
        ax_load.bar(x + (i - (len(series) - 1) / 2) * width, values, width, label=name)
    ax_load.set_xticks(x, labels, rotation=30)
    ax_load.set_ylabel("16-frame clips per second (1 core)")
    ax_load.set_title("clip pipeline throughput")
    ax_load.set_ylim(0, 1.45 * max(max(values) for values in series.values()))  # room for the legend
    ax_load.legend(fontsize=7, ncol=2, loc="upper left")

    sizes = [r["source_mb"] for r in build]
    ax_build.plot(sizes, [r["build_s"] for r in build], "o-", label="ferv39k-hf build")
    ax_build.plot(sizes, [r["floor_s"] for r in build], "s--", label="floor: read once, write once")
    for r in build:
        ax_build.annotate(f"{r['ratio']:.2f}x", (r["source_mb"], r["build_s"]), textcoords="offset points",
                          xytext=(4, 4))
    ax_build.set_xlabel("face-crop bytes in the archive (MB)")
    ax_build.set_ylabel("seconds (1 core)")
    ax_build.set_title("build cost against archive size")
    ax_build.legend(fontsize=8)

    ax_mem.plot(sizes, [r["build_peak_mb"] for r in build], "o-", label="build")
    ax_mem.plot(sizes, [r["pass_peak_mb"] for r in build], "s-", label="full pass over train (224, 16 frames)")
    ax_mem.set_ylim(0, max(1600, max(r["pass_peak_mb"] for r in build) * 1.1))
    ax_mem.axhline(1500, color="grey", linestyle=":", label="1.5 GB")
    ax_mem.set_xlabel("face-crop bytes in the archive (MB)")
    ax_mem.set_ylabel("peak anonymous memory (MB)")
    ax_mem.set_title("peak memory against archive size")
    ax_mem.legend(fontsize=8)
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=90)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
