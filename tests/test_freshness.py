"""Every cached route is fresh: a repaired frame, a replaced zip member or a new builder version
is never answered from an old cache, by ``ferv39k_hf.load``, the Parquet folder or the loading script.

A repair keeps the frame's name and the clip's frame count and changes its bytes, in the ways
a user repairs an archive: a new file of another size, one of the same size, and one of the
same size whose old mtime is put back (as ``unzip`` and ``cp -p`` do).
"""

import json
import os
import subprocess
import zipfile
from pathlib import Path

import datasets
import pytest

import ferv39k_hf
from ferv39k_hf.archive.layout import find_layout
from ferv39k_hf.archive.splits import plan_splits
from ferv39k_hf.cli import main as cli_main
from ferv39k_hf.dataset import fingerprint
from ferv39k_hf.dataset.fingerprint import archive_fingerprint
from ferv39k_hf.synthetic import write_sample_archive

SCRIPT_DIR = Path(__file__).resolve().parents[1] / "loading_script" / "ferv39k"
PYTHON3 = os.environ.get("FERV39K_DATASETS3_PYTHON")
REPAIRS = ("resized", "same_size", "same_size_mtime_restored")


def _archive(root: Path, zip: bool = False) -> Path:
    # One scene at the smallest scale: 14 clips, a few hundred frames.
    write_sample_archive(root, scale=0.01, seed=5, parts=["faces"], scenes=["Experiment"], zip=zip, workers=1)
    return root


def _target(root: Path):
    """The first train clip's id and its first frame (a FileRef)."""
    layout = find_layout(root)
    clip_id = plan_splits(layout).records["train"][0].clip_id
    return clip_id, layout.part("faces").frames(clip_id)[0]


def _new_bytes(data: bytes, same_size: bool) -> bytes:
    """Other bytes that still pass the build's JPEG checks (markers at both ends kept)."""
    if not same_size:
        return data[:-2] + b"\x00\x00\x00\xff\xd9"
    changed = bytearray(data)
    at = len(data) // 2
    while changed[at] in (0x00, 0xFF, 0xAA) or changed[at - 1] == 0xFF:
        at += 1  # leave markers and stuffed bytes alone; 0xAA ^ 0x55 would make a marker
    changed[at] ^= 0x55
    return bytes(changed)


def _repair(path: str, how: str) -> bytes:
    """Rewrite the frame at ``path`` in place; return its new bytes."""
    before = os.stat(path)
    data = _new_bytes(Path(path).read_bytes(), same_size=how != "resized")
    Path(path).write_bytes(data)
    if how == "same_size_mtime_restored":
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
        assert os.stat(path).st_mtime_ns == before.st_mtime_ns and os.stat(path).st_size == before.st_size
    return data


def _rewrite_member(container: str, name: str, data: bytes) -> None:
    """Write the zip anew with one member's bytes replaced, every other member as it was."""
    new = container + ".new"
    with zipfile.ZipFile(container) as old, zipfile.ZipFile(new, "w") as out:
        for info in old.infolist():
            out.writestr(info, data if info.filename == name else old.read(info))
    os.replace(new, container)


def _frame(ds, clip_id: str) -> bytes:
    train = ds["train"]
    undecoded = getattr(datasets, "List", datasets.Sequence)(datasets.Image(decode=False))  # Sequence before 4.0
    row = train.cast_column("frames", undecoded)[train["clip_id"].index(clip_id)]
    return row["frames"][0]["bytes"]


def _cache_files(ds) -> set:
    return {f["filename"] for split in ds.values() for f in split.cache_files}


# ferv39k_hf.load()


@pytest.mark.parametrize("how", REPAIRS)
def test_load_returns_a_repaired_frame(tmp_path, how):
    root = _archive(tmp_path / "FERV39k")
    clip_id, ref = _target(root)
    cache = tmp_path / "cache"
    first = ferv39k_hf.load(root, cache_dir=cache)
    assert _frame(first, clip_id) == Path(ref.name).read_bytes()
    repaired = _repair(ref.name, how)
    second = ferv39k_hf.load(root, cache_dir=cache)
    assert _frame(second, clip_id) == repaired
    assert not _cache_files(first) & _cache_files(second), "the repaired archive must get a cache entry of its own"


def test_load_of_an_unchanged_archive_reuses_its_cache(tmp_path):
    root = _archive(tmp_path / "FERV39k")
    cache = tmp_path / "cache"
    first = ferv39k_hf.load(root, cache_dir=cache)
    second = ferv39k_hf.load(root, cache_dir=cache)  # reading the frames (atime) changes nothing
    assert _cache_files(first) == _cache_files(second)


def test_load_of_a_zipped_archive_returns_a_replaced_member(tmp_path):
    root = _archive(tmp_path / "zipped", zip=True)
    clip_id, ref = _target(root)
    assert ref.container is not None
    cache = tmp_path / "cache"
    old = ferv39k_hf.load(root, cache_dir=cache)
    old_bytes = _frame(old, clip_id)
    new_bytes = _new_bytes(old_bytes, same_size=True)  # so only the member's CRC-32 tells them apart
    _rewrite_member(ref.container, ref.name, new_bytes)
    assert _frame(ferv39k_hf.load(root, cache_dir=cache), clip_id) == new_bytes


def test_a_new_builder_version_gets_a_new_cache_entry(tmp_path, monkeypatch):
    root = _archive(tmp_path / "FERV39k")
    cache = tmp_path / "cache"
    first = _cache_files(ferv39k_hf.load(root, cache_dir=cache))
    monkeypatch.setattr(fingerprint, "BUILDER_VERSION", fingerprint.BUILDER_VERSION + "-changed")
    assert not first & _cache_files(ferv39k_hf.load(root, cache_dir=cache))


def test_the_fingerprint_covers_only_the_part_built(tmp_path):
    root = tmp_path / "FERV39k"
    write_sample_archive(root, scale=0.01, seed=5, parts=["faces", "scenes"], scenes=["Experiment"], workers=1)
    layout = find_layout(root)
    faces = archive_fingerprint(layout, "faces")
    scenes = archive_fingerprint(layout, "scenes")
    _repair(str(layout.part("scenes").frames(_target(root)[0])[0].name), "resized")
    assert archive_fingerprint(find_layout(root), "faces") == faces
    assert archive_fingerprint(find_layout(root), "scenes") != scenes


def test_the_fingerprint_follows_a_rewritten_mp4(tmp_path):
    pytest.importorskip("av")  # the sample's mp4 files are encoded with PyAV
    root = tmp_path / "FERV39k"
    write_sample_archive(root, scale=0.01, seed=5, parts=["videos"], scenes=["Experiment"], workers=1)
    before = archive_fingerprint(find_layout(root), "videos")
    assert archive_fingerprint(find_layout(root), "videos") == before
    part = find_layout(root).part("videos")
    _repair(part.video(part.clip_ids()[0]).name, "same_size_mtime_restored")
    assert archive_fingerprint(find_layout(root), "videos") != before


# The Parquet folder: ferv39k-hf build, then datasets.load_dataset(folder)


def _build(root: Path, out: Path, *extra: str) -> None:
    assert cli_main(["build", str(root), "--out", str(out), *extra]) == 0


def test_a_rebuilt_folder_returns_a_repaired_frame(tmp_path):
    root = _archive(tmp_path / "FERV39k")
    clip_id, ref = _target(root)
    out, cache = tmp_path / "ferv39k", tmp_path / "cache"
    _build(root, out)
    first = datasets.load_dataset(str(out), cache_dir=str(cache))
    assert _frame(first, clip_id) == Path(ref.name).read_bytes()
    repaired = _repair(ref.name, "same_size_mtime_restored")
    _build(root, out, "--overwrite")
    assert _frame(datasets.load_dataset(str(out), cache_dir=str(cache)), clip_id) == repaired


def test_a_new_builder_version_renames_the_shards(tmp_path, monkeypatch):
    root = _archive(tmp_path / "FERV39k")
    out, cache = tmp_path / "ferv39k", tmp_path / "cache"
    _build(root, out)
    shards = {p.name for p in out.rglob("*.parquet")}
    first = _cache_files(datasets.load_dataset(str(out), cache_dir=str(cache)))
    monkeypatch.setattr(fingerprint, "BUILDER_VERSION", fingerprint.BUILDER_VERSION + "-changed")
    _build(root, out, "--overwrite")  # one process: the patched version is the one that writes
    assert not shards & {p.name for p in out.rglob("*.parquet")}
    assert not first & _cache_files(datasets.load_dataset(str(out), cache_dir=str(cache)))


# The datasets < 4 loading script

_LOAD_WITH_SCRIPT = r"""
import hashlib, json, sys
import datasets
import ferv39k_hf.dataset.fingerprint
script, root, cache, clip_id, version = sys.argv[1:6]
if version:
    ferv39k_hf.dataset.fingerprint.BUILDER_VERSION = version
ds = datasets.load_dataset(script, "faces", data_dir=root, trust_remote_code=True, cache_dir=cache)
train = ds["train"].cast_column("frames", datasets.Sequence(datasets.Image(decode=False)))
frame = train[train["clip_id"].index(clip_id)]["frames"][0]["bytes"]
files = sorted(f["filename"] for split in ds.values() for f in split.cache_files)
print(json.dumps({"version": datasets.__version__, "frame": hashlib.sha256(frame).hexdigest(), "files": files}))
"""


def _load_with_script(root: Path, cache: Path, clip_id: str, version: str = "") -> dict:
    env = dict(os.environ, HF_HOME=str(cache.parent / "hf"), HF_DATASETS_TRUST_REMOTE_CODE="1")
    done = subprocess.run([PYTHON3, "-c", _LOAD_WITH_SCRIPT, str(SCRIPT_DIR), str(root), str(cache), clip_id, version],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["version"] == "3.6.0"
    return result


@pytest.mark.skipif(not PYTHON3, reason="set FERV39K_DATASETS3_PYTHON to a Python with datasets==3.6.0 (.ci/run does)")
def test_the_loading_script_returns_a_repaired_frame_and_keys_on_the_version(tmp_path):
    import hashlib

    root = _archive(tmp_path / "FERV39k")
    clip_id, ref = _target(root)
    cache = tmp_path / "cache"
    first = _load_with_script(root, cache, clip_id)
    assert first["frame"] == hashlib.sha256(Path(ref.name).read_bytes()).hexdigest()
    repaired = _repair(ref.name, "same_size_mtime_restored")
    second = _load_with_script(root, cache, clip_id)
    assert second["frame"] == hashlib.sha256(repaired).hexdigest()
    assert not set(first["files"]) & set(second["files"])
    third = _load_with_script(root, cache, clip_id, version=fingerprint.BUILDER_VERSION + "-changed")
    assert third["frame"] == second["frame"] and not set(second["files"]) & set(third["files"])
