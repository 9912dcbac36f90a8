"""Builds that race for one --out, and builds killed at every step of the replace: nothing is lost or left.

The companion of test_safety.py (its fixtures and helpers are reused): a second build into the same --out
fails at once naming the first, and whatever a killed build leaves is removed, kept until the next build
succeeds, or put back.
"""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_safety import _kill, archive, assert_refused, build, cli, pristine, snapshot  # noqa: F401

from ferv39k_hf.archive import outdirs
from ferv39k_hf.archive.buildlock import hidden_stem, lock_path
from ferv39k_hf.archive.outdirs import MARKER

ENV = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parents[1])] + sys.path))


_SEALED = """
import sys, time
import ferv39k_hf.dataset.export as export
def hang(*args):
    print("ready", flush=True)
    time.sleep(300)
export.place_build = hang
export.build_dataset_folder(sys.argv[1], sys.argv[2], overwrite=True)
"""


def _sealed_build(root, out):
    """A build process stopped with its partial folder sealed, before it is put in place."""
    proc = subprocess.Popen([sys.executable, "-c", _SEALED, str(root), str(out)], stdout=subprocess.PIPE, text=True,
                            env=ENV)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def _start(*argv):
    return subprocess.Popen([sys.executable, "-m", "ferv39k_hf.cli", *map(str, argv)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV)


def _label_order(out: Path) -> str:
    return json.loads((out / "build_report.json").read_text())["label_order"]


def test_two_builds_into_one_absent_out_one_wins_the_other_fails_at_once_naming_it(archive, tmp_path):
    """The issue's reproduction: `build A --out o2 & sleep 0.3; build B --out o2 --label-order dfew`."""
    out = tmp_path / "o2"
    first = _start("build", archive, "--out", out)
    time.sleep(0.3)
    second = _start("build", archive, "--out", out, "--label-order", "dfew")
    results = [(proc.wait(timeout=300), *proc.communicate()) for proc in (first, second)]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 1], results
    [(_, won_out, _)] = [r for r in results if r[0] == 0]
    [(_, _, lost_err)] = [r for r in results if r[0] == 1]
    lines = lost_err.strip().splitlines()
    winner = first if results[0][0] == 0 else second
    # while the winner runs, the lock names it; once it is done (this archive builds in a second), --out exists
    assert len(lines) == 1 and (f"{out} is being built by another ferv39k-hf build (process {winner.pid}" in lines[0]
                                or f"{out} already exists; pass --overwrite" in lines[0]), lost_err
    assert _label_order(out) == ("alphabetical" if winner is first else "dfew") and f"built {out}" in won_out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "o2"], "no lock, partial or old left"


def test_two_overwrite_builds_a_moment_apart_end_in_one_line_and_leave_nothing(archive, tmp_path):
    out = tmp_path / "ferv39k"
    build(archive, out)
    procs = [_start("build", archive, "--out", out, "--overwrite")]
    time.sleep(0.01)
    procs.append(_start("build", archive, "--out", out, "--overwrite", "--label-order", "dfew"))
    results = [(proc.wait(timeout=300), *proc.communicate()) for proc in procs]
    assert 0 in [code for code, _, _ in results], results
    for code, _, err in results:
        if code:
            lines = err.strip().splitlines()
            assert len(lines) == 1 and "is being built by another ferv39k-hf build" in lines[0], err
    assert outdirs.folder_problem(out) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "ferv39k"]


def test_a_sealed_partial_of_a_killed_build_is_kept_until_the_next_build_succeeds(archive, tmp_path, capsys):
    out = tmp_path / "ferv39k"
    proc = _sealed_build(archive, out)  # sealed, not yet moved into place
    _kill(proc)
    [sealed] = tmp_path.glob(".ferv39k.partial-*")
    assert "pid" not in json.loads((sealed / MARKER).read_text()), "sealed: its marker lists every file"
    complete = snapshot(sealed)
    damaged = tmp_path / "damaged"
    shutil.copytree(archive, damaged)
    next(damaged.rglob("*.jpg")).write_bytes(b"not a jpeg")
    status, err = cli(capsys, "build", damaged, "--out", out)
    assert_refused(status, err, "build", "not a JPEG")
    assert snapshot(sealed) == complete, "a failed build must not remove a complete one"
    assert not out.exists()
    build(archive, out)
    printed = capsys.readouterr().out
    assert not sealed.exists() and f"removed {sealed}, a complete build left by a build no longer running" in printed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["damaged", "data", "ferv39k"]


def _killed_mid_replace(archive, out):
    """The state a build killed between moving the old --out aside and moving the new one in leaves: no --out,
    the old build as .NAME.old-PID claimed by a dead process, the new one sealed beside it."""
    build(archive, out)
    proc = _sealed_build(archive, out)
    _kill(proc)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    marker = json.loads((out / MARKER).read_text())
    (out / MARKER).write_text(json.dumps({**marker, "host": outdirs.socket.gethostname(), "pid": int(dead)}))
    old = out.parent / f".{out.name}.old-{dead}"
    os.replace(out, old)
    return old


def test_an_old_copy_is_put_back_when_out_is_missing_even_if_the_next_build_fails(archive, tmp_path, capsys):
    out = tmp_path / "ferv39k"
    old = _killed_mid_replace(archive, out)
    before = snapshot(old)
    damaged = tmp_path / "damaged"
    shutil.copytree(archive, damaged)
    next(damaged.rglob("*.jpg")).write_bytes(b"not a jpeg")
    status, err = cli(capsys, "build", damaged, "--out", out, "--overwrite")
    assert_refused(status, err, "build", "not a JPEG")
    after = snapshot(out)
    assert after.pop(MARKER) and before.pop(MARKER) and after == before, "the previous build is back, whole"
    assert outdirs.folder_problem(out) is None and not old.exists()
    [sealed] = tmp_path.glob(".ferv39k.partial-*")  # the dead build's new copy: kept, the build failed
    build(archive, out, "--overwrite")
    assert not sealed.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["damaged", "data", "ferv39k"]


def test_an_old_copy_beside_a_placed_build_goes_once_the_next_build_succeeds(archive, tmp_path, capsys):
    out = tmp_path / "ferv39k"
    old = _killed_mid_replace(archive, out)
    [sealed] = tmp_path.glob(".ferv39k.partial-*")
    os.replace(sealed, out)  # as if killed just after moving the new one in
    build(archive, out, "--overwrite")
    assert not old.exists() and f"removed {old}" in capsys.readouterr().out


def test_a_250_character_out_name_builds_and_its_hidden_names_fit(archive, tmp_path):
    out = tmp_path / ("d" * 250)
    build(archive, out)
    assert outdirs.folder_problem(out) is None
    assert len(os.fsencode(lock_path(out).name)) <= 255
    assert len(os.fsencode(hidden_stem(out))) + len(".partial-4194304-999") <= 255
    assert hidden_stem(out) != hidden_stem(tmp_path / ("d" * 249 + "e")), "the hash tells long names apart"
    build(archive, out, "--overwrite")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["d" * 250, "data"])


def test_an_out_that_appears_during_the_build_is_not_replaced(archive, tmp_path, monkeypatch, capsys):
    """Without --overwrite the final placement checks again that --out is still absent (an empty folder made
    meanwhile would otherwise be replaced without a word by rename)."""
    from ferv39k_hf.dataset import export

    out = tmp_path / "ferv39k"
    run_tasks = export._run_tasks

    def user_makes_it_meanwhile(*args):
        out.mkdir()
        return run_tasks(*args)

    monkeypatch.setattr(export, "_run_tasks", user_makes_it_meanwhile)
    status, err = cli(capsys, "build", archive, "--out", out)
    assert_refused(status, err, "build", f"{out} appeared while the build ran", "The new build is in")
    assert out.is_dir() and not any(out.iterdir())


def test_the_lock_file_is_not_followed_through_a_link(archive, tmp_path, capsys):
    out = tmp_path / "ferv39k"
    target = tmp_path / "elsewhere.txt"
    target.write_text("mine\n")
    lock_path(out).symlink_to(target)
    status, err = cli(capsys, "build", archive, "--out", out)
    assert_refused(status, err, "build", "cannot open the lock file")
    assert target.read_text() == "mine\n" and not out.exists()


@pytest.mark.parametrize("stage", ["marker", "seal"])
def test_a_marker_is_never_seen_half_written(tmp_path, stage):
    folder = tmp_path / "build"
    folder.mkdir()
    outdirs.write_marker(folder, ["README.md"], writer=stage == "marker")
    assert outdirs.read_marker(folder)["files"] == ["README.md"]
    assert sorted(os.listdir(folder)) == [MARKER], "written aside and renamed over: no staging file left"
