"""Every command, given bad input, ends in one line 'ferv39k-hf COMMAND: error: ...' and never a traceback."""

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from ferv39k_hf import fileio
from ferv39k_hf.cli import DEBUG_ENV, main
from ferv39k_hf.errors import LayoutError
from ferv39k_hf.synthetic import write_sample_archive


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli") / "FERV39k"
    write_sample_archive(root, scale=0.001, parts=["faces"], scenes=["Action"])
    return root


@pytest.fixture
def read_only(tmp_path):
    """A folder nobody may write into, root included (the immutable attribute), else a skip."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    made = subprocess.run(["chattr", "+i", str(folder)], capture_output=True) if shutil.which("chattr") else None
    if made is None or made.returncode != 0:
        folder.chmod(0o555)
        if os.access(folder, os.W_OK):
            pytest.skip("cannot make a folder read-only here (root without chattr +i)")
    yield folder
    if made is not None and made.returncode == 0:
        subprocess.run(["chattr", "-i", str(folder)], check=True)
    folder.chmod(0o755)


def _fails_in_one_line(capsys, argv, code=1):
    assert main(argv) == code
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    lines = [line for line in err.splitlines() if line.strip()]
    command = next(word for word in argv if not word.startswith("-"))
    assert lines and lines[-1].startswith(f"ferv39k-hf {command}: error: "), err
    assert sum("error:" in line for line in lines) == 1, err
    return lines[-1]


def _bomb(root: Path, tmp_path: Path) -> Path:
    """A zipped copy of ``root`` whose first frame declares far more than a frame can hold."""
    bombed = tmp_path / "bombed"
    shutil.copytree(root / "4_setups", bombed / "4_setups")
    frames = sorted((root / "2_ClipsforFaceCrop").rglob("*.jpg"))
    with zipfile.ZipFile(bombed / "faces.zip", "w", zipfile.ZIP_DEFLATED) as archive:
        for frame in frames:
            data = frame.read_bytes() if frame != frames[0] else bytes(fileio.MAX_FRAME_BYTES + 1)
            archive.writestr(str(frame.relative_to(root)), data)
    return bombed


CASES = {
    "verify a missing root": (["verify", "{tmp}/nowhere"], "the archive root does not exist"),
    "verify a plain file": (["verify", "{file}"], "must be a folder or a zip file"),
    "verify an empty folder": (["verify", "{empty}"], "no FERV39k part found"),
    "verify a missing part": (["verify", "{root}", "--config", "videos"], "no 0_7_LabelClips"),
    "verify --plot below a file": (["verify", "{root}", "--plot", "{file}/counts.png"], "counts.png"),
    "verify --plot into a read-only folder": (["verify", "{root}", "--plot", "{ro}/counts.png"], "counts.png"),
    "build a missing root": (["build", "{tmp}/nowhere", "--out", "{tmp}/out"], "does not exist"),
    "build --out below a file": (["build", "{root}", "--out", "{file}/out"], "file"),
    "build --out in a read-only folder": (["build", "{root}", "--out", "{ro}/out"], "read-only"),
    "build a zip bomb": (["build", "{bomb}", "--out", "{tmp}/out"], "more than a file of this kind can hold"),
    "verify --plot into a missing folder": (["verify", "{root}", "--plot", "{tmp}/nowhere/counts.png"], "nowhere"),
    "sample below a file": (["sample", "{file}/demo"], "demo"),
    "sample into a read-only folder": (["sample", "{ro}/demo"], "demo"),
    "push a folder not built": (["push", "{empty}", "--repo-id", "org/name"], "README.md is missing"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_ends_in_one_line(case, small, read_only, tmp_path, capsys):
    argv, words = CASES[case]
    (tmp_path / "a-file").write_text("not a folder")
    (tmp_path / "empty").mkdir()
    places = {"tmp": tmp_path, "file": tmp_path / "a-file", "empty": tmp_path / "empty", "root": small,
              "ro": read_only, "bomb": _bomb(small, tmp_path) if "bomb" in case else None}
    argv = [word.format(**places) for word in argv]
    line = _fails_in_one_line(capsys, argv)
    assert words in line or (words == "read-only" and ("not permitted" in line or "denied" in line)), line


def test_a_damaged_split_file_ends_in_one_line_naming_it(small, tmp_path, capsys):
    root = tmp_path / "FERV39k"
    shutil.copytree(small, root)
    split = root / "4_setups" / "All_scenes" / "train_All.csv"
    split.write_bytes(split.read_bytes()[:40] + b"\xff\xfe\x00binary")
    line = _fails_in_one_line(capsys, ["build", str(root), "--out", str(tmp_path / "out")])
    assert "train_All.csv" in line and "UTF-8" in line


def test_argument_errors_are_argparse_lines_not_tracebacks(small, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["build", str(small), "--out", "x", "--label-order", "random"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.splitlines()[-1].startswith("ferv39k-hf build: error: ")


def test_debug_shows_the_traceback(tmp_path, monkeypatch):
    with pytest.raises(LayoutError):
        main(["--debug", "verify", str(tmp_path / "nowhere")])
    with pytest.raises(LayoutError):
        main(["verify", str(tmp_path / "nowhere"), "--debug"])
    monkeypatch.setenv(DEBUG_ENV, "1")
    with pytest.raises(LayoutError):
        main(["verify", str(tmp_path / "nowhere")])


def test_a_bug_is_one_line_that_says_how_to_see_more(monkeypatch, small, capsys):
    import ferv39k_hf.archive.verify

    def broken(*args, **kwargs):
        raise KeyError("planted")

    monkeypatch.setattr(ferv39k_hf.archive.verify, "verify_archive", broken)
    line = _fails_in_one_line(capsys, ["verify", str(small)])
    assert "unexpected KeyError: 'planted'" in line and "--debug" in line


@pytest.mark.slow  # run by .ci/run's slow step; over 3 s
def test_an_archive_on_a_path_with_spaces_and_non_ascii_names(tmp_path):
    """The whole job through the real command, in a folder named with spaces, accents and CJK."""
    place = tmp_path / "my data" / "Ünïcødé 档案"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    for args in (["sample", str(place / "FERV 39k"), "--scale", "0.001", "--parts", "faces"],
                 ["verify", str(place / "FERV 39k")],
                 ["build", str(place / "FERV 39k"), "--out", str(place / "built é")]):
        done = subprocess.run([sys.executable, "-m", "ferv39k_hf.cli", *args], capture_output=True, text=True,
                              env=env, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        assert "Traceback" not in done.stderr
    import datasets

    loaded = datasets.load_dataset(str(place / "built é"))
    assert sum(len(split) for split in loaded.values()) > 0


def test_the_real_process_exits_nonzero_with_one_line(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    done = subprocess.run([sys.executable, "-m", "ferv39k_hf.cli", "build", str(tmp_path / "nowhere"), "--out",
                           str(tmp_path / "out")], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"ferv39k-hf build: error: {tmp_path / 'nowhere'}: the archive root does not exist"]


@pytest.mark.parametrize("seed", range(12))
def test_mutated_archives_through_the_commands_end_in_a_report_or_one_line(seed, small, tmp_path, capsys):
    """A few of test_fuzz's mutations, zipped and split files, through verify and build as a user runs them."""
    import random

    from test_fuzz import _split_mutation, _zip_mutation

    rng = random.Random(seed)
    root = tmp_path / "FERV39k"
    if seed % 2:
        shutil.copytree(small, root)
        target = rng.choice(sorted(root.rglob("*_All.csv")))
        target.write_bytes(_split_mutation(rng, target.read_bytes()))
    else:
        write_sample_archive(root, scale=0.001, parts=["faces"], scenes=["Action"], zip=True)
        target = rng.choice(sorted(root.rglob("*.zip")))
        target.write_bytes(_zip_mutation(rng, target.read_bytes()))
    for argv in (["verify", str(root)], ["build", str(root), "--out", str(tmp_path / "out"), "--on-error", "skip"]):
        code = main(argv)
        out, err = capsys.readouterr()
        assert "Traceback" not in out + err
        assert code in (0, 1), (argv, err)
        errors = [line for line in err.splitlines() if "error:" in line]
        if code == 1 and argv[0] == "build":
            assert len(errors) == 1 and errors[0].startswith("ferv39k-hf build: error: "), err
        assert len(errors) <= 1, err


_SLOW_WORKERS = """
import os, time
if os.environ.get("FERV39K_TEST_SLOW_SHARDS"):
    from ferv39k_hf.dataset import shardwriter

    def write_slowly(self, task, progress=None):
        open(os.path.join(os.environ["FERV39K_TEST_SLOW_SHARDS"], f"worker-{os.getpid()}"), "w").close()
        time.sleep(120)

    shardwriter.ShardWriter.write = write_slowly
"""


def test_ctrl_c_with_worker_processes_is_one_line_and_leaves_nothing(small, tmp_path):
    """Ctrl-C reaches the whole process group; only the parent speaks (issue 25: no `Process ForkServerPoolWorker`
    traceback). Every process of the build, workers included, loads the sitecustomize that keeps shards busy."""
    import signal
    import time

    hooks, started = tmp_path / "hooks", tmp_path / "started"
    hooks.mkdir(), started.mkdir()
    (hooks / "sitecustomize.py").write_text(_SLOW_WORKERS)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(hooks)] + sys.path), FERV39K_TEST_SLOW_SHARDS=str(started))
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "ferv39k_hf.cli", "build", str(small), "--out", str(out),
                             "--num-proc", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    deadline = time.monotonic() + 120
    while len(list(started.iterdir())) < 2 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert len(list(started.iterdir())) == 2, proc.communicate()
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    lines = [line for line in err.replace("\r", "\n").splitlines() if line.strip() and "build faces" not in line]
    assert proc.returncode == 130 and lines == ["ferv39k-hf build: interrupted"], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hooks", "started"], "no partial, lock or --out left"


# -- predictions files that lie, and a Hub that cannot be reached (issue 25) ------------------------------


@pytest.fixture(scope="module")
def small_built(small, tmp_path_factory):
    from ferv39k_hf.dataset.export import build_dataset_folder

    out = tmp_path_factory.mktemp("built") / "ferv39k"
    build_dataset_folder(small, out)
    return out


def _test_clips(folder):
    from ferv39k_hf.metrics.predictions import read_split

    return read_split(folder, "test")


PREDICTIONS = {  # name -> (file text from the test split's first clip id, words the one line must hold)
    "a column named twice": ("clip_id,prediction,prediction\n{id},Angry,Happy\n",
                             "line 1: column 'prediction' is named twice"),
    "an unknown column": ("clip_id,prediction,truth\n{id},Angry,Angry\n", "line 1: unknown column(s) 'truth'"),
    "both id columns": ("clip_id,clip,prediction\n{id},{id},Angry\n", "both clip_id and clip columns"),
    "a field over the csv limit": ('clip_id,prediction\n{id},"' + "A" * 200_000 + '"\n',
                                   "line 2: not CSV the reader can take (field larger than field limit"),
    "a line of 2 MB": ("clip_id,prediction\n{id}," + "A" * (2 << 20) + "\n", "line 2: longer than 1,048,576 bytes"),
    "a long prediction": ("clip_id,prediction\n{id}," + "A" * 100_000 + "\n", "... (100,000 characters) is neither"),
    "a JSON key twice": ('{{"clip_id": "{id}", "prediction": "Angry", "prediction": "Happy"}}\n',
                         "line 1: key 'prediction' appears twice"),
    "a JSON key unknown": ('{{"clip_id": "{id}", "prediction": "Angry"}}\n{{"clip_id": "{id}", "labels": 1}}\n',
                           "line 2: unknown column(s) 'labels'"),
    "bytes that are not UTF-8": ("clip_id,prediction\n{id},Angry\n\udcff\n", "line 3: not UTF-8 text"),
}


@pytest.mark.parametrize("case", sorted(PREDICTIONS))
def test_a_predictions_file_that_lies_is_one_short_line_naming_file_and_line(case, small_built, tmp_path, capsys):
    text, words = PREDICTIONS[case]
    path = tmp_path / "preds.csv"
    path.write_bytes(text.format(id=_test_clips(small_built).clip_ids[0]).encode("utf-8", "surrogateescape"))
    line = _fails_in_one_line(capsys, ["score", str(path), "--dataset", str(small_built), "--resamples", "10"])
    assert str(path) in line and words in line, line
    assert len(line) < 600, f"{len(line):,} characters"


def test_the_issue_header_that_names_prediction_twice_is_refused_not_scored(small_built, tmp_path, capsys):
    """`clip_id,prediction,prediction`: the last column was scored silently (WAR 14.29% instead of 60.39%)."""
    clips = _test_clips(small_built)
    path = tmp_path / "twice.csv"
    path.write_text("clip_id,prediction,prediction\n" + "".join(f"{c},{w},Fear\n" for c, w in
                                                                zip(clips.clip_ids, clips.words)))
    line = _fails_in_one_line(capsys, ["score", str(path), "--dataset", str(small_built)])
    assert "column 'prediction' is named twice" in line


_SCORE_PEAK = r"""
import json, sys
from test_fuzz import peak_mb
from ferv39k_hf.cli import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "peak_mb": peak_mb()}))
"""


@pytest.mark.slow
def test_score_reads_a_large_file_of_unknown_clips_in_bounded_memory(small_built, tmp_path):
    """40 MB of rows naming no clip of the split: one line, and memory for the rows kept, not for the file (the
    whole-file reader took some 25 times the file's size)."""
    big, tiny = tmp_path / "big.csv", tmp_path / "tiny.csv"
    with open(big, "w") as handle:
        handle.write("clip_id,prediction\n")
        for start in range(0, 1_600_000, 100_000):
            handle.write("".join(f"Unknown/Angry/{n:08d},Angry\n" for n in range(start, start + 100_000)))
    tiny.write_text("clip_id,prediction\nUnknown/Angry/00000000,Angry\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).parent)] + sys.path))
    peaks = {}
    for path in (tiny, big):
        done = subprocess.run([sys.executable, "-c", _SCORE_PEAK, "score", str(path), "--dataset", str(small_built)],
                              capture_output=True, text=True, timeout=600, env=env, check=False)
        result = json.loads(done.stdout.strip().splitlines()[-1])
        errors = [line for line in done.stderr.splitlines() if line.strip()]
        assert result["code"] == 1 and len(errors) == 1 and "1,600,000" not in errors[0], done.stderr[-2000:]
        assert len(errors[0]) < 1000 and "clip(s) not in any split of the folder" in errors[0]
        peaks[path.name] = result["peak_mb"]
    assert peaks["big.csv"] - peaks["tiny.csv"] < 100, peaks  # the file is about 40 MB


def test_push_to_a_refused_connection_is_one_line(small_built, monkeypatch, capsys):
    import huggingface_hub.constants
    from localnet import free_port

    port = free_port()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", f"http://127.0.0.1:{port}")
    line = _fails_in_one_line(capsys, ["push", str(small_built), "--repo-id", "team/ferv39k", "--token", "hf_test"])
    assert f"could not reach the Hub at http://127.0.0.1:{port}" in line and "hf_test" not in line


def test_a_split_file_linked_out_of_the_archive_is_named_as_such(small, tmp_path, capsys):
    root = tmp_path / "FERV39k"
    shutil.copytree(small, root)
    split = root / "4_setups" / "All_scenes" / "train_All.csv"
    outside = tmp_path / "elsewhere" / "train_All.csv"
    outside.parent.mkdir()
    split.replace(outside)
    split.symlink_to(outside)
    line = _fails_in_one_line(capsys, ["verify", str(root)])
    assert f"{split}: symbolic link to {outside}, outside the root" in line and "copy the split file" in line
    assert "no train_All.csv found" not in line


def test_a_10_mb_split_file_line_is_quoted_by_its_start_in_the_error_and_the_report(small, tmp_path, capsys):
    root = tmp_path / "FERV39k"
    shutil.copytree(small, root)
    split = root / "4_setups" / "All_scenes" / "train_All.csv"
    split.write_text("Action/Angry/" + "0" * 10_000_000 + " Angry\n" + split.read_text())
    line = _fails_in_one_line(capsys, ["build", str(root), "--out", str(tmp_path / "raise")])
    assert "train_All.csv:1" in line and "(10,000,013 characters)" in line and len(line) < 600, len(line)
    assert main(["build", str(root), "--out", str(tmp_path / "skip"), "--on-error", "skip"]) == 0
    capsys.readouterr()
    report = tmp_path / "skip" / "build_report.json"
    assert report.stat().st_size < 10_000
    assert json.loads(report.read_text())["skipped"][0]["line"] == 1
