"""Damaged archives: verify names every fault, builds never lose or invent a clip."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import datasets
import pytest

from ferv39k_hf.archive.verify import verify_archive
from ferv39k_hf.dataset.export import build_dataset_folder
from ferv39k_hf.errors import BuildError

# datasets >= 4 spells a variable-length list List, older releases Sequence
UNDECODED_FRAMES = getattr(datasets, "List", datasets.Sequence)(datasets.Image(decode=False))

FACES = "2_ClipsforFaceCrop"


def _lines(root: Path, split: str):
    return (root / "4_setups" / "All_scenes" / f"{split}_All.csv").read_text().splitlines()


def _write_lines(root: Path, split: str, lines):
    (root / "4_setups" / "All_scenes" / f"{split}_All.csv").write_text("\n".join(lines) + "\n")


def _copy_faces(src: Path, dst: Path) -> Path:
    shutil.copytree(src / FACES, dst / FACES)
    shutil.copytree(src / "4_setups", dst / "4_setups")
    return dst


@pytest.fixture(scope="module")
def damaged(sample_archive, tmp_path_factory):
    """A copy of the sample with one fault of each kind; returns (root, expected faults)."""
    root = _copy_faces(sample_archive, tmp_path_factory.mktemp("damaged") / "FERV39k")
    train, test = _lines(root, "train"), _lines(root, "test")
    ids = [line.split()[0] for line in train]
    faults = {}

    def frames(clip_id):
        return sorted((root / FACES / clip_id).glob("*.jpg"))

    truncated = frames(ids[0])[3]
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    faults[ids[0]] = ("bad-frame", "truncated JPEG", 1)
    frames(ids[1])[0].write_bytes(b"this is not a jpeg at all" * 10)
    faults[ids[1]] = ("bad-frame", "not a JPEG", 2)
    shutil.rmtree(root / FACES / ids[2])
    faults[ids[2]] = ("missing-clip", "missing", 3)
    for frame in frames(ids[3]):
        frame.unlink()
    faults[ids[3]] = ("empty-clip", "empty", 4)
    scene, emotion, number = ids[4].split("/")
    other = "Happy" if emotion != "Happy" else "Sad"
    train[4] = f"{ids[4]} {other}"
    faults[ids[4]] = ("split-line", "disagrees", 5)
    train.append(train[5])
    faults[ids[5] + "#dup"] = ("duplicate", "listed twice", len(train))
    test.append(train[6])
    faults[ids[6] + "#both"] = ("duplicate", "both", len(test))
    train.append("Atlantis/Angry/0000 Angry")
    train.append("Action/Angry/0001")
    _write_lines(root, "train", train)
    _write_lines(root, "test", test)
    # On disk but in no split file; and a folder of an unknown scene.
    good = frames(ids[7])[0].read_bytes()
    for extra in (f"{scene}/{emotion}/9999", "Atlantis/Angry/0000"):
        (root / FACES / extra).mkdir(parents=True)
        (root / FACES / extra / "00.jpg").write_bytes(good)
    # A zip with entries that would land outside the archive.
    with zipfile.ZipFile(root / "extras.zip", "w") as archive:
        archive.writestr("2_ClipsforFaceCrop/../../evil.jpg", good)
        archive.writestr("/tmp/ferv39k-evil-absolute.jpg", good)
        link = zipfile.ZipInfo("2_ClipsforFaceCrop/Action/Angry/8888/00.jpg")
        link.external_attr = (0o120777 << 16)
        archive.writestr(link, "../../../../../../etc/passwd")
    return root, faults, len(train) + len(test)


def test_verify_names_every_fault(damaged):
    root, faults, _ = damaged
    report = verify_archive(root, progress=False)
    assert not report.ok
    found = {(f.kind, f.clip_id) for f in report.findings}
    for key, (kind, _, _) in faults.items():
        assert (kind, key.split("#")[0]) in found, (key, kind)
    reasons = "\n".join(str(f) for f in report.findings)
    assert "truncated JPEG" in reasons and "not a JPEG" in reasons
    assert "unknown scene 'Atlantis'" in reasons
    assert "expected 'Scene/Emotion/NNNN Emotion'" in reasons
    kinds = {f.kind for f in report.findings}
    assert {"unlisted-clip", "unknown-folder", "unsafe-entry"} <= kinds
    unsafe = [f for f in report.findings if f.kind == "unsafe-entry"]
    assert len(unsafe) == 3
    # Split-line findings carry the file and the line.
    line_finding = next(f for f in report.findings if f.kind == "split-line" and "disagrees" in f.reason)
    assert line_finding.file.endswith("train_All.csv") and line_finding.line == 5


def test_verify_cli_exit_status_and_json(damaged, sample_archive, tmp_path):
    root, _, _ = damaged
    bad = subprocess.run([sys.executable, "-m", "ferv39k_hf.cli", "verify", str(root), "--json"],
                         capture_output=True, text=True)
    assert bad.returncode == 1
    assert json.loads(bad.stdout)["ok"] is False
    clean = subprocess.run([sys.executable, "-m", "ferv39k_hf.cli", "verify", str(sample_archive),
                            "--plot", str(tmp_path / "counts.png")], capture_output=True, text=True)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "OK: no problems" in clean.stdout and "synthetic sample" in clean.stdout  # no count tables on it
    assert (tmp_path / "counts.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _subset(src: Path, dst: Path, lines_per_split: int) -> Path:
    """The first few clips of each split, their folders and nothing else."""
    for split in ("train", "test"):
        lines = _lines(src, split)[:lines_per_split]
        for line in lines:
            clip = line.split()[0]
            shutil.copytree(src / FACES / clip, dst / FACES / clip)
        (dst / "4_setups" / "All_scenes").mkdir(parents=True, exist_ok=True)
        _write_lines(dst, split, lines)
    return dst


def test_verify_deep_catches_damage_the_marker_check_misses(sample_archive, tmp_path):
    root = _subset(sample_archive, tmp_path / "a", 20)
    clip = _lines(root, "test")[0].split()[0]
    frame = sorted((root / FACES / clip).glob("*.jpg"))[2]
    data = bytearray(frame.read_bytes())
    data[600:4000] = b"\x00" * 3400  # markers intact, entropy-coded data wrecked
    data[2:400] = b"\xff" * 398  # and the headers gone
    frame.write_bytes(bytes(data))
    assert verify_archive(root, progress=False).ok
    deep = verify_archive(root, deep=True, progress=False)
    assert [f.clip_id for f in deep.findings] == [clip]


def test_strict_build_fails_naming_clip_file_and_line_and_leaves_nothing(damaged, tmp_path):
    root, _, _ = damaged
    out = tmp_path / "ferv39k"
    with pytest.raises(Exception) as info:
        build_dataset_folder(root, out)
    message = str(info.value)
    assert "train_All.csv:" in message
    assert not out.exists()
    assert not list(tmp_path.iterdir()), "no partial folder is left behind"


def test_strict_build_names_a_damaged_frame(sample_archive, tmp_path):
    root = _copy_faces(sample_archive, tmp_path / "a")
    line_number = 3
    clip = _lines(root, "test")[line_number - 1].split()[0]
    frame = sorted((root / FACES / clip).glob("*.jpg"))[1]
    frame.write_bytes(frame.read_bytes()[:100])
    with pytest.raises(BuildError) as info:
        build_dataset_folder(root, tmp_path / "out")
    message = str(info.value)
    assert clip in message and f"test_All.csv:{line_number}" in message and "truncated JPEG" in message
    assert frame.name in message
    assert not (tmp_path / "out").exists()


def test_skipping_build_accounts_for_every_line(damaged, tmp_path):
    root, faults, total_lines = damaged
    out = tmp_path / "ferv39k"
    result = build_dataset_folder(root, out, on_error="skip")
    report = json.loads((out / "build_report.json").read_text())
    assert sum(report["counts"].values()) + len(report["skipped"]) == total_lines == report["lines"]
    skipped = {(s["clip_id"], s["split"], s["line"]) for s in report["skipped"]}
    for key, (_, _, line) in faults.items():
        split = "test" if key.endswith("#both") else "train"
        assert (key.split("#")[0], split, line) in skipped, key
    assert all(s["reason"] for s in report["skipped"])
    ds = datasets.load_dataset(str(out))
    rows = set(ds["train"]["clip_id"]) | set(ds["test"]["clip_id"])
    damaged_ids = {k.split("#")[0] for k, v in faults.items() if not k.endswith("#dup") and not k.endswith("#both")}
    assert not rows & damaged_ids
    assert len(rows) == sum(report["counts"].values()) == sum(result.counts.values())
    # Frames read before a damaged frame of the same clip are not left in the rows that follow.
    for split in ("train", "test"):
        for row in ds[split].cast_column("frames", UNDECODED_FRAMES):
            files = sorted((root / FACES / row["clip_id"]).glob("*.jpg"))
            assert [f["bytes"] for f in row["frames"]] == [f.read_bytes() for f in files], row["clip_id"]
    assert "did not become rows" in (out / "README.md").read_text()
    # The unsafe zip entries were never written anywhere.
    assert not (root.parent / "evil.jpg").exists() and not (root.parent.parent / "evil.jpg").exists()
    assert not Path("/tmp/ferv39k-evil-absolute.jpg").exists()


def _tree_bytes(folder: Path):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_builds_are_byte_identical_whatever_num_proc(sample_archive, built_faces, tmp_path, monkeypatch):
    import ferv39k_hf.dataset.export as export

    # Several shards per split, so that workers really share the work.
    monkeypatch.setitem(export.ROWS_PER_SHARD, "faces", 64)
    one = tmp_path / "one" / "ferv39k"
    two = tmp_path / "two" / "ferv39k"
    build_dataset_folder(sample_archive, one, num_proc=1)
    build_dataset_folder(sample_archive, two, num_proc=2)
    first, second = _tree_bytes(one), _tree_bytes(two)
    assert len([name for name in first if name.endswith(".parquet")]) > 4
    assert first == second


def test_build_workers_do_not_inherit_a_held_lock(sample_archive, tmp_path):
    # A caller that has run threads (a notebook, a server) may hold a lock when the build starts its
    # workers. A forked worker inherits the lock held and waits on it for ever; the build's workers must
    # start clean. Here the worker's set-up is made to need a lock that a thread of the caller holds.
    script = (
        "import sys, threading, ferv39k_hf.dataset.export as e, ferv39k_hf.dataset.shardwriter as w\n"
        "e.ROWS_PER_SHARD['faces'] = 64\n"
        "held, taken = threading.Lock(), threading.Event()\n"
        "def hold():\n"
        "    with held:\n"
        "        taken.set(); threading.Event().wait(600)\n"
        "threading.Thread(target=hold, daemon=True).start(); taken.wait()\n"
        "plain = w.ShardWriter.__init__\n"
        "def needs_lock(self, *a):\n"
        "    with held: plain(self, *a)\n"
        "w.ShardWriter.__init__ = needs_lock\n"
        "result = e.build_dataset_folder(sys.argv[1], sys.argv[2], num_proc=2)\n"
        "print(sum(result.counts.values()))\n"
    )
    out = tmp_path / "ferv39k"
    try:
        done = subprocess.run([sys.executable, "-c", script, str(sample_archive), str(out)],
                              capture_output=True, text=True, timeout=240)
    except subprocess.TimeoutExpired:
        pytest.fail("build workers hung on a lock held by a thread of the caller (were they forked?)")
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout.split()[-1]) == len(_lines(sample_archive, "train")) + len(_lines(sample_archive, "test"))


def test_killed_build_leaves_old_folder_or_nothing(sample_archive, built_faces, tmp_path):
    script = (
        "import sys, ferv39k_hf.dataset.export as e; e.ROWS_PER_SHARD['faces'] = 8; "
        "e.build_dataset_folder(sys.argv[1], sys.argv[2], overwrite=True)"
    )
    for existing in (False, True):
        out = tmp_path / f"out-{existing}" / "ferv39k"
        if existing:
            shutil.copytree(built_faces, out)
        proc = subprocess.Popen([sys.executable, "-c", script, str(sample_archive), str(out)])
        deadline = time.time() + 60
        while time.time() < deadline and not list(out.parent.glob(".ferv39k.partial-*/data/faces/*.parquet")):
            time.sleep(0.05)
        assert proc.poll() is None, "the build finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        if existing:
            assert _tree_bytes(out) == _tree_bytes(built_faces)
            assert datasets.load_dataset(str(out))["test"].num_rows > 0
        else:
            assert not out.exists()
            with pytest.raises(Exception):
                datasets.load_dataset(str(out))


def test_damaged_zip_member_is_named_and_skipped(sample_archive, tmp_path):
    src = _subset(sample_archive, tmp_path / "src", 6)
    root = tmp_path / "zipped"
    root.mkdir()
    shutil.copytree(src / "4_setups", root / "4_setups")
    victim = _lines(src, "train")[2].split()[0]
    frames = sorted((src / FACES / victim).glob("*.jpg"))
    with zipfile.ZipFile(root / "2_ClipsforFaceCrop-001.zip", "w", zipfile.ZIP_STORED) as archive:
        for path in sorted((src / FACES).rglob("*.jpg")):
            archive.write(path, str(path.relative_to(src)))
    data = bytearray((root / "2_ClipsforFaceCrop-001.zip").read_bytes())
    needle = frames[1].read_bytes()
    at = bytes(data).index(needle)
    data[at + len(needle) // 2] ^= 0xFF  # one flipped byte: the member's CRC no longer matches
    (root / "2_ClipsforFaceCrop-001.zip").write_bytes(bytes(data))
    report = verify_archive(root, progress=False)
    assert [(f.kind, f.clip_id) for f in report.findings] == [("bad-frame", victim)]
    out = tmp_path / "out"
    build_dataset_folder(root, out, on_error="skip")
    skipped = json.loads((out / "build_report.json").read_text())["skipped"]
    assert [(s["clip_id"], s["line"]) for s in skipped] == [(victim, 3)]
    assert frames[1].name in skipped[0]["reason"]
    with pytest.raises(BuildError, match=victim):
        build_dataset_folder(root, tmp_path / "strict")
