"""Seeded mutations of a small zipped archive and of split files: every case ends in a report or a named error.

Each case runs verify and build --on-error skip. A case passes when both end normally or with the
package's own error (one line at the command line), within a time bound, and when a build that finished
accounts for every non-blank split-file line (built or listed in build_report.json). The cases run in
one child process, whose peak memory is bounded too.
"""

import json
import os
import random
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
import traceback
import zipfile
from pathlib import Path

import pytest

CASE_SECONDS = 20  # any one case, verify and build together
PEAK_MB = 1024
ZIP_CASES, SPLIT_CASES = 220, 110


def _zip_mutation(rng: random.Random, data: bytes) -> bytes:
    data = bytearray(data)
    size = len(data)
    # the headers and the central directory are where a flipped byte does the most harm
    where = rng.choice(["start", "directory", "anywhere"])
    at = {"start": rng.randrange(min(size, 4096)), "directory": size - 1 - rng.randrange(min(size, 1 << 16)),
          "anywhere": rng.randrange(size)}[where]
    kind = rng.choice(["flip", "field", "truncate", "splice", "delete"])
    if kind == "flip":
        for _ in range(rng.randint(1, 6)):
            data[min(size - 1, max(0, at + rng.randint(-64, 64)))] ^= 1 << rng.randrange(8)
    elif kind == "field":  # a size, offset or count set to an extreme
        data[at:at + 4] = rng.choice([b"\xff\xff\xff\xff", b"\x00\x00\x00\x00",
                                      b"\xff\xff\xff\x7f", b"\x00\x00\x00\x80"])
    elif kind == "truncate":
        del data[at:]
    elif kind == "splice":
        data[at:at] = rng.randbytes(rng.randint(1, 64))
    else:
        del data[at:at + rng.randint(1, 512)]
    return bytes(data)


def _split_mutation(rng: random.Random, text: bytes) -> bytes:
    lines = text.split(b"\n")
    at = rng.randrange(len(lines))
    kind = rng.choice(["binary", "duplicate", "delete", "label", "header", "crlf", "tabs", "long", "nul",
                       "latin1", "truncate", "empty", "separators"])
    if kind == "binary":
        lines[at] = lines[at][: rng.randrange(len(lines[at]) + 1)] + rng.randbytes(rng.randint(1, 200))
    elif kind == "duplicate":
        lines.insert(rng.randrange(len(lines)), lines[at])
    elif kind == "delete":
        del lines[at]
    elif kind == "label":
        lines[at] = lines[at].rsplit(b" ", 1)[0] + b" " + rng.choice([b"Happy", b"Sad", b"happy", b"", b"7"])
    elif kind == "header":
        lines.insert(0, b"path label")
    elif kind == "crlf":
        return text.replace(b"\n", b"\r\n")
    elif kind == "tabs":
        lines[at] = lines[at].replace(b" ", b"\t")
    elif kind == "long":
        lines[at] = lines[at] + b"x" * (1 << 20)
    elif kind == "nul":
        lines[at] = lines[at].replace(b"/", b"\0", 1)
    elif kind == "latin1":
        lines[at] = lines[at] + b" \xe9"
    elif kind == "truncate":
        return text[: rng.randrange(len(text) + 1)]
    elif kind == "empty":
        return b""
    else:  # characters str.splitlines() would break a line at, but an editor would not
        lines[at] = lines[at].replace(b" ", rng.choice([b"\x1c ", b"\x0c ", b"\xc2\x85 "]), 1)
    return b"\n".join(lines)


def _nonblank_lines(text: bytes) -> int:
    """Lines as an editor shows them (LF, CRLF or CR ends one), with something besides whitespace."""
    decoded = text.decode("utf-8-sig")
    return sum(1 for line in re.split(r"\r\n|\r|\n", decoded) if line.strip())


def _split_texts(root: Path):
    """The split files' bytes, read independently of the package (None where Python's zipfile cannot)."""
    texts = [path.read_bytes() for path in sorted(root.rglob("*_All.csv"))]
    for path in sorted(root.rglob("*.zip")):
        try:
            with zipfile.ZipFile(path) as archive:
                texts += [archive.read(name) for name in archive.namelist() if name.endswith("_All.csv")]
        except Exception:  # noqa: BLE001 -- damaged: no independent reading
            return None
    return texts


def _timeout(*_):
    raise TimeoutError(f"a case ran past {CASE_SECONDS} s")


def _run_case(root: Path, out: Path):
    """What went wrong in one case: None, or a line saying what."""
    from ferv39k_hf.archive.verify import verify_archive
    from ferv39k_hf.dataset.export import build_dataset_folder
    from ferv39k_hf.errors import Ferv39kError

    signal.signal(signal.SIGALRM, _timeout)
    signal.alarm(CASE_SECONDS)
    try:
        try:
            verify_archive(root, progress=False)
        except Ferv39kError:
            pass
        try:
            result = build_dataset_folder(root, out, on_error="skip")
        except Ferv39kError:
            return None
        built = json.loads((out / "build_report.json").read_text())
        texts = _split_texts(root)
        try:
            expected = None if texts is None else sum(_nonblank_lines(text) for text in texts)
        except UnicodeDecodeError:
            return f"built {sum(result.counts.values())} clips from split files that are not UTF-8"
        if expected is not None and built["lines"] != expected:
            return f"{expected} non-blank split-file lines, the build accounts for {built['lines']}"
        return None
    except BaseException as err:  # noqa: BLE001 -- anything but the package's own error fails the case
        return f"{type(err).__name__}: {err} at {traceback.format_tb(err.__traceback__)[-1].strip()}"
    finally:
        signal.alarm(0)
        shutil.rmtree(out, ignore_errors=True)


def run(base: str, work: str, seed: int, zip_cases: int, split_cases: int) -> dict:
    """Run the cases in this process; a dict of failures, the slowest case and the peak memory."""
    base_path, work_path = Path(base), Path(work)
    failures, slowest = {}, 0.0
    zipped, plain = base_path / "zipped", base_path / "plain"
    for case in range(zip_cases + split_cases):
        rng = random.Random(seed * 100_003 + case)
        source = zipped if case < zip_cases else plain
        root = work_path / "case"
        shutil.rmtree(root, ignore_errors=True)
        shutil.copytree(source, root, copy_function=os.link)  # links: the mutated file is unlinked first
        target = rng.choice(sorted(root.rglob("*.zip" if source is zipped else "*_All.csv")))
        data = target.read_bytes()
        target.unlink()
        target.write_bytes((_zip_mutation if source is zipped else _split_mutation)(rng, data))
        started = time.perf_counter()
        failure = _run_case(root, work_path / "out")
        slowest = max(slowest, time.perf_counter() - started)
        if failure:
            failures[f"case {case} ({target.name})"] = failure
    return {"failures": failures, "slowest": slowest, "peak_mb": peak_mb(), "cases": zip_cases + split_cases}


def peak_mb() -> float:
    """This process's peak resident memory. VmHWM where Linux has it: ru_maxrss of a child started with
    vfork or fork carries its parent's peak across exec."""
    try:
        status = Path("/proc/self/status").read_text()
        return int(re.search(r"^VmHWM:\s+(\d+) kB", status, re.M).group(1)) / 1024
    except (OSError, AttributeError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.fixture(scope="module")
def fuzz_base(tmp_path_factory):
    from ferv39k_hf.synthetic import write_sample_archive

    base = tmp_path_factory.mktemp("fuzz")
    write_sample_archive(base / "zipped", scale=0.001, parts=["faces"], zip=True, scenes=["Action"])
    write_sample_archive(base / "plain", scale=0.001, parts=["faces"], scenes=["Action"])
    return base


@pytest.mark.slow  # run by .ci/run's slow step; over 3 s
def test_mutated_archives_end_in_a_report_or_a_named_error(fuzz_base, tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).parent)] + sys.path))
    code = (f"import json, test_fuzz; print(json.dumps(test_fuzz.run({str(fuzz_base)!r}, {str(tmp_path)!r}, 7, "
            f"{ZIP_CASES}, {SPLIT_CASES})))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["cases"] == ZIP_CASES + SPLIT_CASES
    assert not result["failures"], json.dumps(result["failures"], indent=1)[:6000]
    assert result["slowest"] < CASE_SECONDS
    assert result["peak_mb"] < PEAK_MB, result


def _predictions_mutation(rng: random.Random, text: str) -> bytes:
    """A predictions file damaged the ways a hand-edited or truncated one is."""
    lines = text.splitlines(keepends=True)
    choice = rng.randrange(8)
    if choice == 0:  # a column named twice, or one nobody knows
        lines[0] = lines[0].rstrip("\n") + rng.choice([",prediction\n", ",clip_id\n", ",label\n", ",p_Angry\n"])
    elif choice == 1:  # a stray quote
        index = rng.randrange(len(lines))
        cut = rng.randrange(len(lines[index]) + 1)
        lines[index] = lines[index][:cut] + '"' + lines[index][cut:]
    elif choice == 2:  # a field far over any limit
        lines.insert(rng.randrange(1, len(lines) + 1), "Action/Angry/0000," + "x" * rng.choice([200_000, 2 << 20]))
    elif choice == 3:  # cut anywhere
        return "".join(lines).encode()[:rng.randrange(len("".join(lines)))]
    elif choice == 4:  # lines repeated or dropped
        index = rng.randrange(1, len(lines))
        lines.insert(index, lines[index]) if rng.random() < 0.5 else lines.pop(index)
    elif choice == 5:  # a value that is not a class
        index = rng.randrange(1, len(lines))
        lines[index] = lines[index].split(",")[0] + "," + rng.choice(["7", "-1", "angry!", "", "1e400", "NaN"]) + "\n"
    data = bytearray("".join(lines).encode())
    if choice >= 6:  # bytes flipped
        for _ in range(rng.randrange(1, 6)):
            data[rng.randrange(len(data))] = rng.randrange(256)
    return bytes(data)


def test_mutated_predictions_files_score_or_end_in_one_line(fuzz_base, tmp_path, capsys):
    from ferv39k_hf.cli import main
    from ferv39k_hf.dataset.export import build_dataset_folder
    from ferv39k_hf.metrics.predictions import read_split

    built = tmp_path / "built"
    build_dataset_folder(fuzz_base / "plain", built)
    clips = read_split(built, "test")
    text = "clip_id,prediction\n" + "".join(f"{c},{w}\n" for c, w in zip(clips.clip_ids, clips.words))
    rng = random.Random(11)
    for case in range(60):
        path = tmp_path / f"case-{case}.csv"
        path.write_bytes(_predictions_mutation(rng, text))
        code = main(["score", str(path), "--dataset", str(built), "--resamples", "10", "--allow-partial"])
        out, err = capsys.readouterr()
        errors = [line for line in err.splitlines() if line.strip()]
        assert "Traceback" not in out + err and code in (0, 1), (case, err[-2000:])
        assert len(errors) == code and all(len(line) < 1000 and str(path) in line for line in errors), (case, err)
