"""Discovery of a full-size zipped archive: time and peak memory against plain zipfile, in one run.

FERV39k's face crops are 1,090,633 JPEG files in 38,935 clip folders. This
writes a zip of that shape (``2_ClipsforFaceCrop/<Scene>/<Emotion>/<NNNN>/NN.jpg``,
the official clips per scene and class, the official frames-per-clip
histogram, folder entries as ``zip -r`` writes them) whose members hold a few
dummy bytes each, since discovery reads only the central directory. The split
files go beside it, unzipped. Then, each in a fresh child process, best of
``--rounds`` interleaved rounds:

- ``import``: Python importing ferv39k_hf.archive.layout and nothing else (the fixed cost);
- ``infolist``: ``zipfile.ZipFile(zip).infolist()``, the baseline every zipfile-based discovery pays;
- ``find_layout``: the package's discovery of the whole archive;
- ``find_layout@PATH`` for each ``--compare PATH``: the same with another checkout's package (e.g. the code before).

Peak memory is the child's peak resident set (VmHWM): discovery maps no files, so it is all its own.
CPU seconds (the child's, imports included) are printed too: on a shared machine they vary less than wall time.

    python bench/fullsize.py                       # writes the zip to a temporary folder, removed after
    python bench/fullsize.py --workdir /tmp/full --keep --compare /path/to/old/checkout --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Dict, List, Optional

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

DATA = b"\xff\xd8\xff\xd9"  # a JPEG's start and end markers: enough for discovery, which never reads data
_LOCAL = struct.Struct("<4s2B4HL2L2H")
_CENTRAL = struct.Struct("<4s4B4HL2L5H2L")
_END64 = struct.Struct("<4sQ2H2L4Q")
_LOCATOR64 = struct.Struct("<4sLQL")
_END = struct.Struct("<4s4H2LH")
_DOS_TIME, _DOS_DATE = (9 << 11) | (35 << 5) | 6, ((2022 - 1980) << 9) | (3 << 5) | 1


def write_fullsize_zip(path: Path, scale: float = 1.0, seed: int = 0, folder_entries: bool = True) -> Dict[str, int]:
    """Write the face-crop zip of :func:`ferv39k_hf.synthetic.plan_sample` (``scale``, ``seed``) to ``path``.

    Members are stored, dated, in sorted order, each frame holding :data:`DATA`;
    zip64 records are written (more than 65,535 members). Returns counts of
    clips, frames and members. Written with struct directly: zipfile would keep
    a ZipInfo per member in this process too.
    """
    from ferv39k_hf.synthetic import plan_sample
    from ferv39k_hf.taxonomy import PART_FOLDERS

    plan = plan_sample(scale=scale, seed=seed)
    top = PART_FOLDERS["faces"]
    crc = zlib.crc32(DATA)
    central = bytearray()
    count = frames = 0
    seen_dirs = set()
    with open(path, "wb") as out:
        offset = 0

        def member(name: str, data: bytes, attr: int, member_crc: int) -> None:
            nonlocal offset, count
            raw = name.encode()
            header = _LOCAL.pack(b"PK\x03\x04", 20, 0, 0x800, 0, _DOS_TIME, _DOS_DATE, member_crc, len(data),
                                 len(data), len(raw), 0)
            out.write(header + raw + data)
            central.extend(_CENTRAL.pack(b"PK\x01\x02", 20, 3, 20, 0, 0x800, 0, _DOS_TIME, _DOS_DATE, member_crc,
                                         len(data), len(data), len(raw), 0, 0, 0, 0, attr << 16, offset))
            central.extend(raw)
            offset += len(header) + len(raw) + len(data)
            count += 1

        for clip in plan.clips:  # sorted by clip id
            parts = clip.clip_id.split("/")
            for depth in range(len(parts) + 1):
                folder = "/".join([top] + parts[:depth]) + "/"
                if folder_entries and folder not in seen_dirs:
                    seen_dirs.add(folder)
                    member(folder, b"", 0o40755, 0)
            for i in range(clip.num_frames):
                member(f"{top}/{clip.clip_id}/{i:02d}.jpg", DATA, 0o100644, crc)
            frames += clip.num_frames
        start = offset
        out.write(central)
        end64 = start + len(central)
        out.write(_END64.pack(b"PK\x06\x06", 44, 45, 45, 0, 0, count, count, len(central), start))
        out.write(_LOCATOR64.pack(b"PK\x06\x07", 0, end64, 1))
        out.write(_END.pack(b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0))
    return {"clips": len(plan.clips), "frames": frames, "members": count, "directory_mb": round(len(central) / 1e6, 1)}


def write_split_files(root: Path, scale: float = 1.0, seed: int = 0) -> None:
    """The sample plan's split files (train_All.csv, test_All.csv, per scene), unzipped under ``root``."""
    from ferv39k_hf.synthetic import plan_sample, split_files

    for name, data in split_files(plan_sample(scale=scale, seed=seed)).items():
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


# VmHWM, this process image's peak resident set: ru_maxrss would also count the parent's
# resident set at the fork, which Linux carries over the exec.
_PEAK = "import json, time\n" \
        "def _report(**fields):\n" \
        "    with open('/proc/self/status') as f:\n" \
        "        fields['peak_mb'] = next(int(l.split()[1]) for l in f if l.startswith('VmHWM:')) / 1024\n" \
        "    fields['cpu_seconds'] = time.process_time()\n" \
        "    print(json.dumps(fields))\n"

CHILD = {
    "import": _PEAK + "import time\nt = time.perf_counter()\nimport ferv39k_hf.archive.layout\n"
                      "_report(seconds=time.perf_counter() - t)\n",
    "infolist": _PEAK + "import sys, time, zipfile\nt = time.perf_counter()\n"
                        "n = len(zipfile.ZipFile(sys.argv[2]).infolist())\n"
                        "_report(seconds=time.perf_counter() - t, members=n)\n",
    "find_layout": _PEAK + "import sys, time\nimport ferv39k_hf.archive.layout as layout\nt = time.perf_counter()\n"
                           "found = layout.find_layout(sys.argv[1])\nseconds = time.perf_counter() - t\n"
                           "part = found.part('faces')\nids = part.clip_ids()\n"
                           "frames = sum(len(part.frames(i)) for i in ids[::97])\n"
                           "_report(seconds=seconds, clips=len(ids), sampled_frames=frames, module=layout.__file__)\n",
}


def run_child(method: str, root: Path, zip_path: Path, pythonpath: str) -> Dict:
    """One measurement in a fresh interpreter; its JSON line (seconds, peak_mb, ...)."""
    env = dict(os.environ, PYTHONPATH=pythonpath)
    # run from the checkout: "python -c" puts the working folder first on sys.path, before PYTHONPATH
    done = subprocess.run([sys.executable, "-c", CHILD[method], str(root), str(zip_path)], capture_output=True,
                          text=True, env=env, cwd=pythonpath)
    if done.returncode != 0:
        raise SystemExit(f"{method} child failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(root: Path, zip_path: Path, rounds: int, compare: List[str]) -> Dict[str, Dict]:
    """Each method's best round: least seconds and least peak, round-robin over ``rounds`` rounds."""
    here = str(HERE.parent)
    methods = [("import", "import", here), ("infolist", "infolist", here), ("find_layout", "find_layout", here)]
    methods += [(f"find_layout@{path}", "find_layout", str(Path(path).resolve())) for path in compare]
    best: Dict[str, Dict] = {}
    for _ in range(rounds):
        for label, method, path in methods:
            result = run_child(method, root, zip_path, path)
            if "module" in result and not result["module"].startswith(path + os.sep):
                raise SystemExit(f"{label} imported {result['module']}, not the code under {path}")
            kept = best.setdefault(label, dict(result))
            kept["seconds"] = min(kept["seconds"], result["seconds"])
            kept["peak_mb"] = min(kept["peak_mb"], result["peak_mb"])
            kept["cpu_seconds"] = min(kept["cpu_seconds"], result["cpu_seconds"])
    return best


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the official clip counts (default 1.0)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds; the best counts (default 2)")
    parser.add_argument("--workdir", help="where to write the archive (default: a temporary folder, removed after)")
    parser.add_argument("--keep", action="store_true", help="keep an archive already in --workdir, or the one written")
    parser.add_argument("--compare", nargs="*", default=[], metavar="PATH",
                        help="also measure find_layout from these checkouts (folders holding ferv39k_hf/)")
    parser.add_argument("--json", help="write the numbers here")
    args = parser.parse_args(argv)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="ferv39k-bench-fullsize-"))
    root = work / "FERV39k"
    zip_path = root / "2_ClipsforFaceCrop.zip"
    mark = root / ".ferv39k-bench-fullsize"  # what this script made, and so may delete
    if root.exists() and not mark.exists():
        parser.error(f"{root} exists and was not written by this benchmark; choose another --workdir")
    try:
        if not (args.keep and zip_path.exists()):
            shutil.rmtree(root, ignore_errors=True)
            root.mkdir(parents=True)
            mark.touch()
            started = time.perf_counter()
            shape = write_fullsize_zip(zip_path, scale=args.scale)
            write_split_files(root, scale=args.scale)
            print(f"wrote {zip_path} ({zip_path.stat().st_size / 1e6:.0f} MB): {shape['clips']} clips, "
                  f"{shape['frames']} frames, {shape['members']} members, "
                  f"central directory {shape['directory_mb']} MB, "
                  f"in {time.perf_counter() - started:.1f} s", flush=True)
        best = measure(root, zip_path, args.rounds, args.compare)
    finally:
        if not args.keep and mark.exists():
            shutil.rmtree(work if not args.workdir else root, ignore_errors=True)
    base = best["infolist"]
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load "
          f"{os.getloadavg()[0]:.1f}; best of {args.rounds} round(s), each a fresh process")
    print(f"{'method':<40} {'seconds':>8} {'cpu s':>6} {'peak MB':>8} {'time / infolist':>16} {'peak / infolist':>16}")
    for label, row in best.items():
        print(f"{label:<40} {row['seconds']:>8.2f} {row['cpu_seconds']:>6.2f} {row['peak_mb']:>8.0f} "
              f"{row['seconds'] / base['seconds']:>16.2f} {row['peak_mb'] / base['peak_mb']:>16.2f}")
    found = best["find_layout"]
    print(f"find_layout found {found['clips']} clips; target: under 5 s and under 300 MB peak")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"scale": args.scale, "rounds": args.rounds, "methods": best}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
