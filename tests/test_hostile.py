"""Hostile archives: members that inflate past any frame, lying sizes, duplicate names, encryption.

Each such clip is damaged like any other: verify names it, build --on-error skip lists it,
build --on-error raise stops naming it, and no read goes past what a frame can hold.
"""

import json
import os
import re
import struct
import subprocess
import sys
import tracemalloc
import zipfile
from pathlib import Path

import pytest

from ferv39k_hf import fileio
from ferv39k_hf.archive.verify import verify_archive
from ferv39k_hf.dataset.export import build_dataset_folder
from ferv39k_hf.errors import BuildError
from ferv39k_hf.synthetic import write_sample_archive

LIMIT = 1 << 20  # the frame limit these tests set, so that a bomb is cheap to make


@pytest.fixture
def zipped(tmp_path):
    """A small zipped archive; returns (root, faces zip, the first member of a listed clip)."""
    root = tmp_path / "FERV39k"
    write_sample_archive(root, scale=0.001, parts=["faces"], zip=True, scenes=["Action", "Crime"])
    faces = next(root.rglob("2_ClipsforFaceCrop-*.zip"))
    with zipfile.ZipFile(faces) as archive:
        member = next(name for name in archive.namelist() if name.endswith(".jpg"))
    return root, faces, member


def _rewrite(path: Path, replace: dict, extra=(), bomb=None):
    """Rewrite the zip at ``path``: members named in ``replace`` get (data, compress_type); ``extra``
    (name, data) members are appended, duplicates allowed; ``bomb`` (name, size) becomes ``size`` zero
    bytes, deflated as they are written, so that no test holds them in memory."""
    with zipfile.ZipFile(path) as old:
        members = [(info, old.read(info.filename)) for info in old.infolist()]
    with zipfile.ZipFile(path.with_suffix(".new"), "w") as new:
        for info, data in members:
            if bomb is not None and info.filename == bomb[0]:
                info.compress_type = zipfile.ZIP_DEFLATED
                with new.open(info, "w", force_zip64=True) as member:
                    for _ in range(bomb[1] >> 24):
                        member.write(bytes(1 << 24))
                continue
            if info.filename in replace:
                data, info.compress_type = replace[info.filename]
            new.writestr(info, data)
        for name, data in extra:
            with pytest.warns(UserWarning, match="Duplicate name"):
                new.writestr(zipfile.ZipInfo(name), data)
    path.with_suffix(".new").replace(path)


def _patch_sizes(path: Path, member: str, file_size: int):
    """Make ``member`` declare ``file_size`` bytes in both its local and its central header."""
    data = bytearray(path.read_bytes())
    name = member.encode()
    local, central = data.index(name) - 30, data.rindex(name) - 46
    assert data[local:local + 4] == b"PK\x03\x04" and data[central:central + 4] == b"PK\x01\x02"
    struct.pack_into("<L", data, local + 22, file_size)
    struct.pack_into("<L", data, central + 24, file_size)
    path.write_bytes(bytes(data))


def _clip(member: str) -> str:
    return "/".join(member.split("/")[-4:-1])


def _assert_damaged_everywhere(root: Path, clip_id: str, words: str, tmp_path: Path):
    report = verify_archive(root)
    assert not report.ok
    named = [f for f in report.findings if f.clip_id == clip_id]
    assert named and words in named[0].reason, [str(f) for f in report.findings]
    result = build_dataset_folder(root, tmp_path / "skip", on_error="skip")
    skipped = json.loads((tmp_path / "skip" / "build_report.json").read_text())["skipped"]
    assert [entry["clip_id"] for entry in skipped] == [clip_id] and words in skipped[0]["reason"]
    assert sum(result.counts.values()) + 1 == report.clips_checked
    with pytest.raises(BuildError, match=re.escape(clip_id) + ".*" + re.escape(words)):
        build_dataset_folder(root, tmp_path / "raise")
    assert not (tmp_path / "raise").exists()


def _assert_damaged_in_bounded_memory(root: Path, clip_id: str, words: str, tmp_path: Path):
    """_assert_damaged_everywhere, with Python's allocations at peak far below the member's size."""
    tracemalloc.start()
    try:
        _assert_damaged_everywhere(root, clip_id, words, tmp_path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * LIMIT, f"{peak:,} bytes at peak: the member was read or inflated"


def test_a_member_that_declares_more_than_a_frame_is_never_inflated(zipped, tmp_path, monkeypatch):
    monkeypatch.setattr(fileio, "MAX_FRAME_BYTES", LIMIT)
    root, faces, member = zipped
    _rewrite(faces, {member: (bytes(64 * LIMIT), zipfile.ZIP_DEFLATED)})  # 64 MiB of zeros, 64 KB deflated
    _assert_damaged_in_bounded_memory(root, _clip(member), "more than a file of this kind can hold", tmp_path)


def test_a_member_that_inflates_past_its_declared_size_stops_there(zipped, tmp_path, monkeypatch):
    monkeypatch.setattr(fileio, "MAX_FRAME_BYTES", LIMIT)
    root, faces, member = zipped
    _rewrite(faces, {member: (bytes(64 * LIMIT), zipfile.ZIP_DEFLATED)})
    _patch_sizes(faces, member, 20_000)  # a lie: a frame's size, 64 MiB behind it
    _assert_damaged_in_bounded_memory(root, _clip(member), "inflates past its declared 20,000 bytes", tmp_path)


def test_a_plain_frame_file_far_too_large_is_refused_unread(tmp_path, monkeypatch):
    monkeypatch.setattr(fileio, "MAX_FRAME_BYTES", LIMIT)
    root = tmp_path / "FERV39k"
    write_sample_archive(root, scale=0.001, parts=["faces"], scenes=["Action"])
    frame = sorted(root.rglob("*.jpg"))[0]
    data = frame.read_bytes()
    with open(frame, "r+b") as handle:  # a valid JPEG start and end, 3 GiB of holes between
        handle.truncate(3 << 30)
        handle.seek((3 << 30) - len(data))
        handle.write(data)
    clip_id = "/".join(frame.parts[-4:-1])
    _assert_damaged_in_bounded_memory(root, clip_id, "more than a file of this kind can hold", tmp_path)


def test_duplicate_member_names_make_the_clip_damaged(zipped, tmp_path):
    root, faces, member = zipped
    with zipfile.ZipFile(faces) as archive:
        other = archive.read(member)[::-1]
    _rewrite(faces, {}, extra=[(member, other)])
    _assert_damaged_everywhere(root, _clip(member), "more than one member of this name", tmp_path)


def test_an_encrypted_member_makes_the_clip_damaged(zipped, tmp_path):
    root, faces, member = zipped
    data = bytearray(faces.read_bytes())
    name = member.encode()
    local, central = data.index(name) - 30, data.rindex(name) - 46
    data[local + 6] |= 1  # the encryption flag bit, in both headers
    data[central + 8] |= 1
    faces.write_bytes(bytes(data))
    _assert_damaged_everywhere(root, _clip(member), "encrypted", tmp_path)


_PEAK = r"""
import json, sys
from test_fuzz import peak_mb
from ferv39k_hf.cli import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "peak_mb": peak_mb()}))
"""


@pytest.mark.slow
def test_a_3_gib_zip_bomb_is_named_within_bounded_memory(zipped, tmp_path):
    """The default limits against a real 3 GiB member: verify and both builds name it, each under 1 GB."""
    root, faces, member = zipped
    _rewrite(faces, {}, bomb=(member, 3 << 30))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).parent)] + sys.path))
    for args in (["verify", str(root)], ["build", str(root), "--out", str(tmp_path / "a"), "--on-error", "skip"],
                 ["build", str(root), "--out", str(tmp_path / "b")]):
        done = subprocess.run([sys.executable, "-c", _PEAK, *args], capture_output=True, text=True, timeout=600,
                              env=env)
        result = json.loads(done.stdout.strip().splitlines()[-1])
        assert "Traceback" not in done.stderr, done.stderr[-2000:]
        assert result["peak_mb"] < 1024, (args, result)
        assert result["code"] == (0 if args[-1] == "skip" else 1), (args, done.stderr[-500:])
        if args[0] != "build" or args[-1] != "skip":
            assert _clip(member) in done.stdout + done.stderr
    report = json.loads((tmp_path / "a" / "build_report.json").read_text())
    assert [entry["clip_id"] for entry in report["skipped"]] == [_clip(member)]


def test_line_numbers_count_lines_as_an_editor_does():
    from ferv39k_hf.archive.annotations import parse_split_text

    text = "Action/Angry/0000 Angry\x0c\r\nAction/Angry/0001 An\x1cgry\nAction/Angry/0002 Angry\rAction/Angry/x Angry\n"
    records, problems = parse_split_text(text, split="train", source="train_All.csv")
    assert [r.line for r in records] == [1, 3]
    assert [(p.line, p.clip_id) for p in problems] == [(2, None), (4, "Action/Angry/x")]


# -- entries where a frame should be that are not frames (issue 25) ------------------------------------------


@pytest.fixture
def unpacked(tmp_path):
    """A small unpacked archive (faces only); returns (root, a listed clip's folder)."""
    root = tmp_path / "FERV39k"
    write_sample_archive(root, scale=0.001, parts=["faces"], scenes=["Action", "Crime"])
    folder = sorted(p for p in (root / "2_ClipsforFaceCrop" / "Crime").glob("*/*") if p.is_dir())[0]
    return root, folder


def _make_fifo(path: Path):
    os.mkfifo(path)


_NOT_FRAMES = {  # how an entry named like a frame is replaced, and the words every report says of it
    "a FIFO": (_make_fifo, "a named pipe (FIFO), not a frame file"),
    "a folder": (os.mkdir, "a folder, not a frame file"),
    "a dangling link": (lambda path: os.symlink("nowhere.jpg", path), "dangling symbolic link"),
    "a link out of the archive": (lambda path: os.symlink("/dev/zero", path), "symbolic link to /dev/zero, outside"),
}


@pytest.mark.parametrize("case", sorted(_NOT_FRAMES))
def test_an_entry_named_like_a_frame_that_is_not_one_is_named_everywhere(unpacked, tmp_path, case):
    """The issue's reproduction: one frame of a clip replaced; never 40 frames instead of 41 with exit 0."""
    root, folder = unpacked
    make, words = _NOT_FRAMES[case]
    frame = sorted(folder.glob("*.jpg"))[1]
    frame.unlink()
    make(frame)
    _assert_damaged_everywhere(root, "/".join(folder.parts[-3:]), words, tmp_path)


def test_a_frame_that_vanishes_between_listing_and_reading_names_the_clip(unpacked, tmp_path, monkeypatch):
    from ferv39k_hf.archive.clipfiles import ClipReader

    root, folder = unpacked
    clip_id = "/".join(folder.parts[-3:])
    frame_refs = ClipReader.frame_refs

    def listed_then_deleted(self, record):
        refs = frame_refs(self, record)
        if record.clip_id == clip_id:
            os.unlink(refs[-1].name)  # the last frame: no gap in the numbers gives it away
        return refs

    monkeypatch.setattr(ClipReader, "frame_refs", listed_then_deleted)
    build_dataset_folder(root, tmp_path / "skip", on_error="skip")
    skipped = json.loads((tmp_path / "skip" / "build_report.json").read_text())["skipped"]
    assert [entry["clip_id"] for entry in skipped] == [clip_id] and "No such file" in skipped[0]["reason"]


def test_a_frame_that_changes_size_while_it_is_read_is_refused(unpacked):
    from ferv39k_hf.archive.files import ByteSink
    from ferv39k_hf.archive.layout import find_layout
    from ferv39k_hf.errors import LayoutError

    root, folder = unpacked
    part = find_layout(root).part("faces")
    ref = part.frames("/".join(folder.parts[-3:]))[0]
    sink = ByteSink(capacity=16)
    real_fill = sink.fill_from

    def grows_meanwhile(fd, most):
        with open(ref.name, "ab") as handle:
            handle.write(b"\0" * 10)
        return real_fill(fd, most)

    sink.fill_from = grows_meanwhile
    with pytest.raises(LayoutError, match="changed size while it was read"):
        part.read_into(ref, sink)
    assert sink.end == 0


def test_a_gap_in_frame_numbers_is_a_verify_warning_and_a_build_report_warning(unpacked, tmp_path):
    root, folder = unpacked
    clip_id = "/".join(folder.parts[-3:])
    sorted(folder.glob("*.jpg"))[2].unlink()  # "a frame deleted while build runs": 02 is gone
    report = verify_archive(root, progress=False)
    assert report.ok and [(f.kind, f.clip_id) for f in report.findings] == [("frame-gap", clip_id)]
    assert "frame numbers skip 02" in report.findings[0].reason
    assert "1 warning(s): frame-gap 1" in report.format() and "OK: no problems" in report.format()
    result = build_dataset_folder(root, tmp_path / "out")
    warnings = json.loads((tmp_path / "out" / "build_report.json").read_text())["warnings"]
    assert [(w["clip_id"], "skip 02" in w["reason"]) for w in warnings] == [(clip_id, True)]
    assert f"clip {clip_id}: frame numbers skip 02" in result.summary()


def _scandir_loops_at(monkeypatch, folder):
    """Make listing ``folder`` fail with ELOOP (root ignores modes, so the error is injected)."""
    real_scandir = os.scandir

    def loops_there(path="."):
        if isinstance(path, (str, os.PathLike)) and os.fspath(path) == str(folder):
            raise OSError(40, "Too many levels of symbolic links", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", loops_there)


def test_an_unlistable_clip_folder_is_that_clips_problem_under_skip(unpacked, tmp_path, monkeypatch):
    """ELOOP or EACCES on one clip folder (root ignores modes, so the error is injected) is a per-clip report."""
    root, folder = unpacked
    _scandir_loops_at(monkeypatch, folder)
    _assert_damaged_everywhere(root, "/".join(folder.parts[-3:]), "clip folder cannot be listed", tmp_path)


def test_an_unlistable_emotion_folder_makes_its_clips_per_clip_reports_not_a_stop(unpacked, tmp_path, monkeypatch):
    root, folder = unpacked
    emotion = folder.parent
    clips = sorted("/".join(p.parts[-3:]) for p in emotion.iterdir())
    _scandir_loops_at(monkeypatch, emotion)
    report = verify_archive(root, progress=False)
    assert not report.ok and any(f.file == str(emotion) and "cannot be listed" in f.reason for f in report.findings)
    build_dataset_folder(root, tmp_path / "skip", on_error="skip")
    skipped = json.loads((tmp_path / "skip" / "build_report.json").read_text())["skipped"]
    listed = sorted(entry["clip_id"] for entry in skipped)
    assert listed and set(listed) <= set(clips), skipped
    assert all(f"{emotion} cannot be listed (Too many levels of symbolic links)" in e["reason"] for e in skipped)
