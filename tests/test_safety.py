"""The archive and the user's folders are untouchable: every writer refuses a target in the archive, and
``build --overwrite`` replaces or removes only folders that ferv39k-hf build made and marked.

Each refusal test hashes every byte and lists every path (links included, not followed) under the test's
folder before and after, so any write, move or delete anywhere in it fails the test.
"""

import hashlib
import json
import os
import runpy
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from ferv39k_hf.archive import outdirs
from ferv39k_hf.archive.outdirs import MARKER, OutputRefused
from ferv39k_hf.cli import main as cli_main
from ferv39k_hf.synthetic import write_sample_archive

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SMALL = dict(parts=["faces"], scenes=["Crime"], workers=1)  # about 20 clips: a build takes well under a second


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """A tiny unpacked archive, never handed to a command: tests work on copies of it."""
    root = tmp_path_factory.mktemp("pristine") / "FERV39k"
    write_sample_archive(root, **SMALL)
    return root


@pytest.fixture
def archive(pristine, tmp_path):
    root = tmp_path / "data" / "FERV39k"
    shutil.copytree(pristine, root)
    return root


def snapshot(folder: Path):
    """Every path under ``folder`` with its kind and content: sha256 of a file, target of a link."""
    seen = {}
    for top, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = Path(top, name)
            rel = path.relative_to(folder).as_posix()
            if path.is_symlink():
                seen[rel] = ("link", os.readlink(path))
            elif path.is_dir():
                seen[rel] = ("dir", None)
            else:
                seen[rel] = ("file", hashlib.sha256(path.read_bytes()).hexdigest())
    return seen


def cli(capsys, *argv):
    """Run ferv39k-hf in this process; its exit status and stderr."""
    status = cli_main([str(a) for a in argv])
    return status, capsys.readouterr().err


def assert_refused(status, err, command, *reasons):
    lines = err.strip().splitlines()
    assert status != 0
    assert len(lines) == 1 and lines[0].startswith(f"ferv39k-hf {command}: error: "), err
    for reason in reasons:
        assert reason in lines[0], lines[0]


def build(root, out, *extra):
    assert cli_main(["build", str(root), "--out", str(out), *map(str, extra)]) == 0


# -- --out in, at, above or linked to the archive -----------------------------------------------------------

def _archive_targets(root: Path):
    """name -> (the --out to give, a phrase the refusal must hold)."""
    links = root.parent.parent
    (links / "to-archive").symlink_to(root, target_is_directory=True)
    (links / "to-parent").symlink_to(root.parent, target_is_directory=True)
    return {
        "the archive root": (root, "is the archive root"),
        "its parent": (root.parent, "holds the archive root"),
        "a new folder inside it": (root / "ferv39k", "lies inside the archive root"),
        "a part folder inside it": (root / "2_ClipsforFaceCrop", "lies inside the archive root"),
        "a link to the archive": (links / "to-archive", "is the archive root"),
        "a link to its parent": (links / "to-parent", "holds the archive root"),
        "a path through a link": (links / "to-parent" / "FERV39k" / "ferv39k", "lies inside the archive root"),
    }


TARGETS = ["the archive root", "its parent", "a new folder inside it", "a part folder inside it",
           "a link to the archive", "a link to its parent", "a path through a link"]


@pytest.mark.parametrize("overwrite", [True, False], ids=["overwrite", "plain"])
@pytest.mark.parametrize("target", TARGETS)
def test_build_refuses_an_out_in_at_or_above_the_archive(archive, tmp_path, capsys, target, overwrite):
    out, reason = _archive_targets(archive)[target]
    before = snapshot(tmp_path)
    status, err = cli(capsys, "build", archive, "--out", out, *(["--overwrite"] if overwrite else []))
    assert_refused(status, err, "build", reason, "never writes, moves or deletes anything in the archive")
    assert snapshot(tmp_path) == before


def test_build_refuses_the_archive_when_the_root_is_given_through_a_link(archive, tmp_path, capsys):
    link = tmp_path / "archive-link"
    link.symlink_to(archive, target_is_directory=True)
    before = snapshot(tmp_path)
    status, err = cli(capsys, "build", link, "--out", archive, "--overwrite")
    assert_refused(status, err, "build", "is the archive root")
    assert snapshot(tmp_path) == before


def test_build_refuses_a_zipped_archive_as_out(tmp_path, capsys):
    root = tmp_path / "download"
    write_sample_archive(root, zip=True, **SMALL)
    assert list(root.rglob("*.zip"))
    before = snapshot(tmp_path)
    for out in (root, next(root.rglob("*.zip")), root.parent):
        status, err = cli(capsys, "build", root, "--out", out, "--overwrite")
        assert_refused(status, err, "build", "the archive root")
    assert snapshot(tmp_path) == before


def test_console_script_refuses_the_archive_in_one_line(archive, tmp_path):
    """The installed command's path: a separate process, its exit status and its stderr."""
    before = snapshot(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "ferv39k_hf.cli", "build", str(archive), "--out", str(archive),
                           "--overwrite"], capture_output=True, text=True, timeout=120)
    assert_refused(proc.returncode, proc.stderr, "build", f"--out {archive} is the archive root")
    assert "Traceback" not in proc.stderr
    assert snapshot(tmp_path) == before


# -- --overwrite replaces only a marked build that holds nothing else ----------------------------------------

def test_overwrite_refuses_a_users_folder(archive, tmp_path, capsys):
    thesis = tmp_path / "thesis"
    (thesis / "chapters").mkdir(parents=True)
    (thesis / "chapters" / "one.tex").write_text("\\chapter{One}\n")
    (thesis / "notes.txt").write_text("do not lose\n")
    before = snapshot(tmp_path)
    status, err = cli(capsys, "build", archive, "--out", thesis, "--overwrite")
    assert_refused(status, err, "build", f"{thesis} was not made by ferv39k-hf build (no marker {MARKER})",
                   "remove it yourself or choose another --out")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("change", ["a user's file", "a user's folder", "a link", "a garbled marker",
                                    "a foreign marker", "a file where the folder was", "a link to a build"])
def test_overwrite_refuses_a_build_the_user_changed(archive, tmp_path, capsys, change):
    out = tmp_path / "ferv39k"
    build(archive, out)
    target, reason = out, {
        "a user's file": "did not write (notes.txt)", "a user's folder": "did not write (analysis)",
        "a link": "did not write (data/faces/elsewhere)", "a garbled marker": "is unreadable",
        "a foreign marker": "is not one ferv39k-hf build writes", "a file where the folder was": "is not a folder",
        "a link to a build": "is a symbolic link",
    }[change]
    if change == "a user's file":
        (out / "notes.txt").write_text("my notes\n")
    elif change == "a user's folder":
        (out / "analysis").mkdir()
    elif change == "a link":
        (out / "data" / "faces" / "elsewhere").symlink_to(tmp_path / "data", target_is_directory=True)
    elif change == "a garbled marker":
        (out / MARKER).write_text("{not json")
    elif change == "a foreign marker":
        (out / MARKER).write_text(json.dumps({"tool": "something else", "files": []}))
    elif change == "a file where the folder was":
        shutil.rmtree(out)
        out.write_text("a plain file\n")
    else:
        target = tmp_path / "current"
        target.symlink_to(out, target_is_directory=True)
    before = snapshot(tmp_path)
    status, err = cli(capsys, "build", archive, "--out", target, "--overwrite")
    assert_refused(status, err, "build", reason, "choose another --out")
    assert snapshot(tmp_path) == before


def test_overwrite_replaces_an_earlier_build(archive, tmp_path, capsys):
    out, fresh = tmp_path / "ferv39k", tmp_path / "fresh" / "ferv39k"
    build(archive, out, "--validation-fraction", "0.3")
    old_shards = {p.name for p in out.rglob("*.parquet")}
    marker = json.loads((out / MARKER).read_text())
    assert marker["tool"] == "ferv39k-hf build" and "host" not in marker and "pid" not in marker
    assert sorted(marker["files"]) == sorted(p.relative_to(out).as_posix() for p in out.rglob("*")
                                             if p.is_file() and p.name != MARKER)
    build(archive, out, "--overwrite")
    build(archive, fresh)
    assert snapshot(out) == snapshot(fresh)
    validation = [name for name in old_shards if name.startswith("validation-")]
    assert validation and not any((out / "data" / "faces" / name).exists() for name in validation), \
        "the old build's own files are gone"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "ferv39k", "fresh"], "nothing left beside it"


def test_out_changed_during_the_build_is_kept_and_the_new_build_left_beside_it(archive, tmp_path, monkeypatch,
                                                                               capsys):
    import ferv39k_hf.dataset.export as export

    out = tmp_path / "ferv39k"
    build(archive, out)
    run_tasks = export._run_tasks

    def user_writes_meanwhile(*args):
        (out / "notes.txt").write_text("written while the build ran\n")
        return run_tasks(*args)

    monkeypatch.setattr(export, "_run_tasks", user_writes_meanwhile)
    before = snapshot(out)
    status, err = cli(capsys, "build", archive, "--out", out, "--overwrite")
    assert_refused(status, err, "build", f"{out} was not replaced", "did not write (notes.txt)", "The new build is in")
    after = snapshot(out)
    assert after.pop("notes.txt") and after == before
    [left] = tmp_path.glob(".ferv39k.partial-*")
    assert (left / "README.md").is_file() and str(left) in err


def test_old_copy_that_changed_after_renaming_is_kept(archive, tmp_path, monkeypatch, capsys):
    """The old build is checked again after it is moved aside, just before it is deleted."""
    out = tmp_path / "ferv39k"
    build(archive, out)
    old_files = snapshot(out)
    replace = outdirs.os.replace

    def user_writes_into_the_moved_copy(src, dst):
        replace(src, dst)
        if Path(dst).name.startswith(".ferv39k.old-"):
            (Path(dst) / "notes.txt").write_text("mine\n")

    # outdirs' own os: datasets 2.14 puts a copy of the os module in place of some modules' os
    monkeypatch.setattr(outdirs.os, "replace", user_writes_into_the_moved_copy)
    assert cli_main(["build", str(archive), "--out", str(out), "--overwrite"]) == 0
    printed = capsys.readouterr().out
    [old] = tmp_path.glob(".ferv39k.old-*")
    assert f"kept the previous copy, moved aside to {old}" in printed and "notes.txt" in printed
    kept = snapshot(old)
    assert kept.pop("notes.txt") and kept.pop(MARKER)
    old_files.pop(MARKER)
    assert kept == old_files


# -- leftovers of builds that were killed --------------------------------------------------------------------

_HANG = """
import sys, time
import ferv39k_hf.dataset.export as export, ferv39k_hf.archive.outdirs as outdirs
def hang(*args):
    print("ready", flush=True)
    time.sleep(300)
    return hang.real(*args)
where = sys.argv[3]
owner = export if where == "_run_tasks" else outdirs
hang.real = getattr(owner, where)
setattr(owner, where, hang)
export.build_dataset_folder(sys.argv[1], sys.argv[2], overwrite=True)
"""


def _hanging_build(root, out, where):
    """A build process stopped at ``where`` (its partial folder made, or its old copy moved aside)."""
    proc = subprocess.Popen([sys.executable, "-c", _HANG, str(root), str(out), where], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def _kill(proc):
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stdout.close()


def test_killed_builds_partial_is_removed_by_the_next_build_and_a_live_ones_kept(archive, tmp_path, capsys):
    out = tmp_path / "ferv39k"
    proc = _hanging_build(archive, out, "_run_tasks")
    try:
        [partial] = tmp_path.glob(".ferv39k.partial-*")
        marker = json.loads((partial / MARKER).read_text())
        assert (marker["host"], marker["pid"]) == (socket.gethostname(), proc.pid)
        live = snapshot(partial)
        status, err = cli(capsys, "build", archive, "--out", out, "--overwrite")  # while that build runs
        assert_refused(status, err, "build", f"{out} is being built by another ferv39k-hf build (process {proc.pid}")
        assert snapshot(partial) == live
    finally:
        _kill(proc)
    capsys.readouterr()
    build(archive, out, "--overwrite")
    assert not partial.exists()
    assert f"removed {partial}" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "ferv39k"]


def test_killed_builds_old_copy_is_removed_by_the_next_build(archive, tmp_path):
    out = tmp_path / "ferv39k"
    build(archive, out)
    proc = _hanging_build(archive, out, "_claimed_by_me")  # moved aside, not yet deleted
    _kill(proc)
    [old] = tmp_path.glob(".ferv39k.old-*")
    assert json.loads((old / MARKER).read_text())["pid"] == proc.pid
    build(archive, out, "--overwrite")
    assert not old.exists()


@pytest.mark.parametrize("case", ["no marker", "a garbled marker", "another host", "a user's file"])
def test_leftovers_not_provably_a_dead_local_builds_are_kept(archive, tmp_path, capsys, case):
    out = tmp_path / "ferv39k"
    proc = _hanging_build(archive, out, "_run_tasks")
    _kill(proc)
    [partial] = tmp_path.glob(".ferv39k.partial-*")
    if case == "no marker":
        (partial / MARKER).unlink()
    elif case == "a garbled marker":
        (partial / MARKER).write_text("{")
    elif case == "another host":
        marker = json.loads((partial / MARKER).read_text())
        (partial / MARKER).write_text(json.dumps({**marker, "host": "another-" + socket.gethostname()}))
    else:
        (partial / "notes.txt").write_text("mine\n")
    before = snapshot(partial)
    build(archive, out, "--overwrite")
    assert snapshot(partial) == before
    assert f"left {partial} alone" in capsys.readouterr().out


# -- the other writers -------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["a user's folder", "an archive", "a plain file"])
def test_sample_refuses_a_non_empty_out(archive, tmp_path, capsys, kind):
    out = {"a user's folder": tmp_path / "thesis", "an archive": archive, "a plain file": tmp_path / "file"}[kind]
    if kind == "a user's folder":
        out.mkdir()
        (out / "notes.txt").write_text("mine\n")
    elif kind == "a plain file":
        out.write_text("mine\n")
    before = snapshot(tmp_path)
    status, err = cli(capsys, "sample", out, "--parts", "faces")
    # the archive here is itself a sample, of other settings: refused as such, never written into
    reason = "made with other settings" if kind == "an archive" else "choose a new or empty folder"
    assert_refused(status, err, "sample", str(out), reason)
    assert snapshot(tmp_path) == before


def test_verify_refuses_a_plot_inside_the_archive(archive, tmp_path, capsys):
    link = tmp_path / "to-archive"
    link.symlink_to(archive, target_is_directory=True)
    before = snapshot(tmp_path)
    for plot in (archive / "counts.png", link / "counts.png", archive / "2_ClipsforFaceCrop" / "counts.png"):
        status, err = cli(capsys, "verify", archive, "--plot", plot)
        assert_refused(status, err, "verify", f"--plot {plot}", "lies inside the archive root")
    assert snapshot(tmp_path) == before


def test_load_refuses_a_cache_inside_the_archive(archive, tmp_path, monkeypatch):
    import datasets

    import ferv39k_hf

    before = snapshot(tmp_path)
    for cache in (archive / "cache", archive, archive.parent):
        with pytest.raises(OutputRefused, match="cache_dir .* the archive root"):
            ferv39k_hf.load(archive, cache_dir=str(cache))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", archive / "hf-cache")  # the default, when not given
    with pytest.raises(OutputRefused, match=r"datasets' cache \(HF_DATASETS_CACHE\) .* lies inside the archive root"):
        ferv39k_hf.load(archive)
    assert snapshot(tmp_path) == before


def _example(name):
    """The example's ``main`` through runpy, without running it."""
    return SimpleNamespace(**runpy.run_path(str(EXAMPLES / f"{name}.py")))


def test_examples_refuse_outputs_inside_the_data(archive, tmp_path, capsys):
    before = snapshot(tmp_path)
    predict = _example("predict")
    # The check comes before the checkpoint is read: a missing one proves nothing was loaded.
    assert predict.main([str(tmp_path / "no-checkpoint"), "--batch", str(archive),
                         "--output", str(archive / "predictions.csv")]) == 2
    assert "--output" in capsys.readouterr().err
    train = _example("run_video_classification")
    with pytest.raises(OutputRefused, match="--output_dir .* lies inside the archive root"):
        train.main(["--model_name_or_path", str(tmp_path / "no-model"), "--archive_dir", str(archive),
                    "--output_dir", str(archive / "run"), "--report_to", "none"])
    assert snapshot(tmp_path) == before
