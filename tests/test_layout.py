"""Archive discovery: every way a user may hold the archive gives the same clips and bytes."""

import os
import stat
import sys
import zipfile
from pathlib import Path

import pytest

from ferv39k_hf.archive.annotations import parse_split_text
from ferv39k_hf.archive.files import ByteSink, FileRef
from ferv39k_hf.archive.layout import find_layout, natural_key
from ferv39k_hf.errors import LayoutError

DRIVE = "drive-download-20220301T093512Z"
CLIPS = ["Crime/Angry/0000", "Crime/Angry/0001", "Action/Happy/0000", "War/Sad/0003"]
SHORT_CLIP = "War/Sad/0003"  # its frames are unpadded: 1.jpg .. 11.jpg


def archive_files():
    """A small archive: relative path -> bytes, as the unzipped parts hold it."""
    files = {}
    for clip in CLIPS:
        names = [f"{i}.jpg" for i in range(1, 12)] if clip == SHORT_CLIP else [f"{i:02d}.jpg" for i in range(3)]
        for name in names:
            files[f"2_ClipsforFaceCrop/{clip}/{name}"] = f"face {clip} {name}".encode()
        for name in names[:2]:
            files[f"3_ClipsforScenImages/{clip}/{name}"] = f"scene {clip} {name}".encode()
        files[f"0_7_LabelClips/{clip}.mp4"] = f"video {clip}".encode()
    files["2_ClipsforFaceCrop/Crime/Angry/0000/Thumbs.db"] = b"not a frame"
    files["4_setups/All_scenes/train_All.csv"] = b"Crime/Angry/0000 Angry\nAction/Happy/0000 Happy\nWar/Sad/0003 Sad\n"
    files["4_setups/All_scenes/test_All.csv"] = b"Crime/Angry/0001 Angry\n"
    files["4_setups/22_scenes/train_Crime.csv"] = b"Crime/Angry/0000 Angry\n"
    return files


def write_tree(base, files):
    for name, data in files.items():
        path = Path(base, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def write_zip(path, files):
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)


def halves(files):
    """Split the files the way drive exports do: arbitrarily, one clip's frames across both."""
    out = ({}, {})
    for i, name in enumerate(sorted(files)):
        out[i % 2][name] = files[name]
    return out


def form_plain(root, files):
    write_tree(root, files)


def form_extra_level(root, files):
    write_tree(root / "FERV39k", files)


def form_drive_folders(root, files):
    for n, half in enumerate(halves(files), start=1):
        for name, data in half.items():
            part, rest = name.split("/", 1)
            export = f"{DRIVE}-00{n}" if part == "4_setups" else f"{part}-00{n}"
            write_tree(root / export, {f"{part}/{rest}": data})


def form_zipped_exports(root, files):
    for n, half in enumerate(halves(files), start=1):
        by_part = {}
        for name, data in half.items():
            by_part.setdefault(name.split("/", 1)[0], {})[name] = data
        for part, members in by_part.items():
            write_zip(root / f"{DRIVE}-00{n}" / f"{part}-00{n}.zip", members)


def form_mixed(root, files):
    unpacked = {k: v for k, v in files.items() if k.startswith(("4_setups", "3_"))}
    write_tree(root / "FERV39k", unpacked)
    faces = {k: v for k, v in files.items() if k.startswith("2_")}
    for n, half in enumerate(halves(faces), start=1):
        write_zip(root / f"2_ClipsforFaceCrop-00{n}.zip", half)
    write_zip(root / f"{DRIVE}-003" / "videos.zip", {k: v for k, v in files.items() if k.startswith("0_")})


FORMS = [form_plain, form_extra_level, form_drive_folders, form_zipped_exports, form_mixed]


def summary(layout):
    """Everything a build reads: clip ids, frame paths and bytes, videos, split texts."""
    out = {split: layout.read_split(split) for split in ("train", "test")}
    out["scene splits"] = {key: layout.read_source(src) for key, src in layout.scene_split_files.items()}
    for kind, part in layout.parts.items():
        clips = {}
        for clip_id in part.clip_ids():
            refs = [part.video(clip_id)] if kind == "videos" else part.frames(clip_id)
            clips[clip_id] = [(part.relative_path(ref), ref.size, part.read(ref)) for ref in refs]
        out[kind] = clips
    return out


def snapshot(folder):
    """Every path under ``folder`` with its size and mtime; links as themselves (pytest leaves dangling
    ``*current`` links where it has removed other tests' folders)."""
    return {(str(p), p.lstat().st_size, p.lstat().st_mtime_ns) for p in Path(folder).rglob("*")}


@pytest.mark.parametrize("form", FORMS, ids=lambda f: f.__name__)
def test_every_form_gives_the_same_clips_and_bytes(tmp_path, form):
    files = archive_files()
    form_plain(tmp_path / "reference", files)
    form(tmp_path / "archive", files)
    before = snapshot(tmp_path)
    layout = find_layout(tmp_path / "archive")
    got = summary(layout)
    assert got == summary(find_layout(tmp_path / "reference"))
    assert sorted(layout.parts) == ["faces", "scenes", "videos"]
    assert got["faces"]["Crime/Angry/0000"][0][0] == "Crime/Angry/0000/00.jpg"
    assert list(got["faces"]) == sorted(CLIPS) and layout.scene_split_files.keys() == {("train", "Crime")}
    assert layout.unsafe == []
    assert snapshot(tmp_path) == before  # discovery and reads write nothing


@pytest.mark.parametrize("form", [form_plain, form_mixed], ids=lambda f: f.__name__)
def test_read_into_a_buffer_gives_the_bytes_of_read(tmp_path, form):
    """Frames and videos read one after another into one buffer, from 1 byte up: exactly read()'s bytes."""
    form(tmp_path, archive_files())
    layout = find_layout(tmp_path)
    sink = ByteSink(capacity=1)
    for kind, part in layout.parts.items():
        for clip_id in part.clip_ids():
            refs = [part.video(clip_id)] if kind == "videos" else part.frames(clip_id)
            for ref in refs:
                start = sink.end
                part.read_into(ref, sink)
                assert bytes(sink.view(start, sink.end)) == part.read(ref)
                assert ref.size == sink.end - start
    assert len(sink.data) >= sink.end > 100
    sink.clear()
    part = layout.part("faces")
    ref = part.frames("Crime/Angry/0000")[0]
    part.read_into(ref, sink)
    assert bytes(sink.data[:sink.end]) == part.read(ref)


def test_unreadable_frame_is_a_layout_error_and_read_into_leaves_the_buffer(tmp_path):
    write_tree(tmp_path, archive_files())
    part = find_layout(tmp_path).part("faces")
    refs = part.frames("Crime/Angry/0000")
    sink = ByteSink(capacity=4)
    part.read_into(refs[0], sink)
    before = bytes(sink.view(0, sink.end))
    os.unlink(refs[1].name)
    os.mkdir(refs[1].name)  # a folder named like a frame since it was listed: refused before reading
    for ref in (refs[1], FileRef(None, str(tmp_path / "gone.jpg"))):
        with pytest.raises(LayoutError, match="not a regular file|cannot read the file"):
            part.read_into(ref, sink)
        assert bytes(sink.view(0, sink.end)) == before
    with pytest.raises(LayoutError, match="cannot read the file"):
        FileRef(None, str(tmp_path / "gone.jpg")).size


def test_frames_are_natural_sorted_and_non_jpg_ignored(tmp_path):
    write_tree(tmp_path, archive_files())
    extra = tmp_path / "2_ClipsforFaceCrop/Crime/Angry/0000"
    (extra / "03.JPG").write_bytes(b"upper")
    (extra / "04.jpeg").write_bytes(b"jpeg")
    (extra / ".05.jpg").write_bytes(b"hidden")
    part = find_layout(tmp_path).part("faces")
    short = [Path(r.name).name for r in part.frames(SHORT_CLIP)]
    assert short == [f"{i}.jpg" for i in range(1, 12)]
    assert [Path(r.name).name for r in part.frames("Crime/Angry/0000")] == ["00.jpg", "01.jpg", "02.jpg", "03.JPG",
                                                                           "04.jpeg"]
    assert sorted(["10.jpg", "2.jpg", "1.jpg"], key=natural_key) == ["1.jpg", "2.jpg", "10.jpg"]
    assert sorted(["010.jpg", "002.jpg"], key=natural_key) == sorted(["010.jpg", "002.jpg"])
    assert part.frames("Crime/Angry/9999") == []
    with pytest.raises(LayoutError, match="frame folders"):
        part.video("Crime/Angry/0000")


def test_split_file_with_bom_crlf_blank_lines_and_trailing_spaces(tmp_path):
    files = archive_files()
    files["4_setups/All_scenes/train_All.csv"] = ("\ufeffCrime/Angry/0000 Angry  \r\n\r\n"
                                                  "War/Sad/0003 Sad\r\n  \r\n").encode()
    write_zip(tmp_path / "all.zip", files)
    layout = find_layout(tmp_path)
    records, problems = parse_split_text(layout.read_split("train"), split="train",
                                         source=layout.split_files["train"].display)
    assert [r.clip_id for r in records] == ["Crime/Angry/0000", "War/Sad/0003"] and problems == []
    assert layout.split_files["train"].display.endswith("all.zip!4_setups/All_scenes/train_All.csv")


def test_duplicate_split_files_identical_ok_different_is_an_error(tmp_path):
    files = archive_files()
    write_tree(tmp_path / "FERV39k", files)
    test_csv = "4_setups/All_scenes/test_All.csv"
    write_zip(tmp_path / "setups-copy.zip", {test_csv: files[test_csv]})
    assert find_layout(tmp_path).read_split("test") == "Crime/Angry/0001 Angry\n"
    write_zip(tmp_path / "setups-copy.zip", {"4_setups/All_scenes/test_All.csv": b"Crime/Angry/0000 Angry\n"})
    with pytest.raises(LayoutError) as err:
        find_layout(tmp_path)
    message = str(err.value)
    assert str(tmp_path / "FERV39k/4_setups/All_scenes/test_All.csv") in message
    assert f"{tmp_path / 'setups-copy.zip'}!4_setups/All_scenes/test_All.csv" in message


def test_missing_root_part_or_split_file_is_a_clear_error(tmp_path):
    with pytest.raises(LayoutError, match="does not exist"):
        find_layout(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(LayoutError, match="no FERV39k part found"):
        find_layout(tmp_path / "empty")
    files = {k: v for k, v in archive_files().items() if "train_All" not in k}
    write_tree(tmp_path / "a", files)
    with pytest.raises(LayoutError) as err:
        find_layout(tmp_path / "a")
    assert str(tmp_path / "a") in str(err.value) and "train_All.csv" in str(err.value)
    layout = find_layout_without(tmp_path / "b", "3_")
    with pytest.raises(LayoutError, match="3_ClipsforScenImages"):
        layout.part("scenes")


def find_layout_without(root, prefix):
    write_tree(root, {k: v for k, v in archive_files().items() if not k.startswith(prefix)})
    return find_layout(root)


def test_unknown_names_listed_and_wrapper_folders_are_not_part_roots(tmp_path):
    files = archive_files()
    files["2_ClipsforFaceCrop/Mystery/Angry/0000/00.jpg"] = b"x"
    files["2_ClipsforFaceCrop/Crime/Bored/0002/00.jpg"] = b"y"
    write_tree(tmp_path / "2_ClipsforFaceCrop-002" / "FERV39k", files)
    (tmp_path / ".hidden/2_ClipsforFaceCrop/Crime/Angry/0042").mkdir(parents=True)
    part = find_layout(tmp_path).part("faces")
    assert part.roots == [str(tmp_path / "2_ClipsforFaceCrop-002/FERV39k/2_ClipsforFaceCrop")]
    assert {"Mystery/Angry/0000", "Crime/Bored/0002"} <= set(part.clip_ids())
    assert "Crime/Angry/0042" not in part.clip_ids()
    assert part.clip_location("Crime/Angry/0063") == f"{part.roots[0]}/Crime/Angry/0063"


def test_zip_members_without_part_folder_backslashes_and_mac_junk(tmp_path):
    write_tree(tmp_path, {k: v for k, v in archive_files().items() if k.startswith("4_")})
    write_zip(tmp_path / "2_ClipsforFaceCrop-001.zip", {
        "Crime/Angry/0000/00.jpg": b"a",  # the zip's own name is the part folder
        "__MACOSX/Crime/Angry/0000/._00.jpg": b"resource fork",
    })
    write_zip(tmp_path / "windows.zip", {"2_ClipsforFaceCrop\\Crime\\Angry\\0001\\00.jpg": b"b"})
    part = find_layout(tmp_path).part("faces")
    assert part.clip_ids() == ["Crime/Angry/0000", "Crime/Angry/0001"]
    assert [part.read(r) for r in part.frames("Crime/Angry/0000")] == [b"a"]
    ref, = part.frames("Crime/Angry/0001")
    assert part.relative_path(ref) == "Crime/Angry/0001/00.jpg" and part.read(ref) == b"b"
    assert part.clip_location("Crime/Angry/0000") == f"{tmp_path / '2_ClipsforFaceCrop-001.zip'}!Crime/Angry/0000"


def unsafe_zip(path):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("2_ClipsforFaceCrop/Crime/Angry/0000/00.jpg", b"good")
        archive.writestr("2_ClipsforFaceCrop/../../evil.jpg", b"evil")
        archive.writestr("2_ClipsforFaceCrop/Crime/Angry/0000/../../../../../x.jpg", b"evil")
        archive.writestr("/abs/2_ClipsforFaceCrop/Crime/Angry/0000/01.jpg", b"evil")
        archive.writestr("C:/2_ClipsforFaceCrop/Crime/Angry/0000/02.jpg", b"evil")
        link = zipfile.ZipInfo("2_ClipsforFaceCrop/Crime/Angry/0000/03.jpg")
        link.create_system = 3
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        archive.writestr(link, "/etc/passwd")
        archive.writestr("4_setups/train_All.csv", b"Crime/Angry/0000 Angry\n")
        archive.writestr("4_setups/../test_All.csv", b"Crime/Angry/0000 Angry\n")
        archive.writestr("4_setups/test_All.csv", b"")


def test_unsafe_zip_entries_are_reported_never_listed_or_read(tmp_path, monkeypatch):
    unsafe_zip(tmp_path / "a.zip")
    monkeypatch.chdir(tmp_path)
    before = snapshot(tmp_path.parent)
    layout = find_layout(tmp_path)
    part = layout.part("faces")
    frames = part.frames("Crime/Angry/0000")
    assert [part.read(r) for r in frames] == [b"good"]
    reasons = {u.name: u.reason for u in layout.unsafe}
    assert all(u.container == str(tmp_path / "a.zip") for u in layout.unsafe)
    assert reasons == {
        "2_ClipsforFaceCrop/../../evil.jpg": "'..' component in the path",
        "2_ClipsforFaceCrop/Crime/Angry/0000/../../../../../x.jpg": "'..' component in the path",
        "/abs/2_ClipsforFaceCrop/Crime/Angry/0000/01.jpg": "absolute path",
        "C:/2_ClipsforFaceCrop/Crime/Angry/0000/02.jpg": "drive letter in the path",
        "2_ClipsforFaceCrop/Crime/Angry/0000/03.jpg": "symbolic link entry",
        "4_setups/../test_All.csv": "'..' component in the path",
    }
    assert layout.read_split("test") == ""
    with pytest.raises(LayoutError, match="not a 2_ClipsforFaceCrop member"):
        part.read(FileRef(str(tmp_path / "a.zip"), "2_ClipsforFaceCrop/Crime/Angry/0000/03.jpg", 11))
    assert snapshot(tmp_path.parent) == before


def test_links_out_of_the_root_are_not_followed(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    write_tree(root, archive_files())
    write_tree(outside, {"secret.jpg": b"secret", "Angry/0000/00.jpg": b"s"})
    clip = root / "2_ClipsforFaceCrop/Crime/Angry/0000"
    (clip / "99.jpg").symlink_to(outside / "secret.jpg")
    (clip / "98.jpg").symlink_to(clip / "00.jpg")  # inside the root: followed
    (root / "2_ClipsforFaceCrop/Crime/Angry/0005").symlink_to(outside / "Angry/0000")
    (root / "2_ClipsforFaceCrop/Crime/Angry/0006").symlink_to(clip)
    layout = find_layout(root)
    part = layout.part("faces")
    assert [u.name for u in layout.unsafe] == [str(root / "2_ClipsforFaceCrop/Crime/Angry/0005")]
    assert layout.unsafe[0].container is None
    frames, unsafe = part.scan_clip("Crime/Angry/0000")
    assert [Path(r.name).name for r in frames] == ["00.jpg", "01.jpg", "02.jpg", "98.jpg"]
    assert [u.name for u in unsafe] == [str(clip / "99.jpg")] and part.frames("Crime/Angry/0005") == []
    assert "Crime/Angry/0006" in part.clip_ids()


def test_unreadable_folder_outside_a_part_is_passed_over_inside_a_part_its_clips_are_missing(tmp_path, monkeypatch):
    write_tree(tmp_path, archive_files())
    (tmp_path / "lost+found").mkdir()
    real_scandir = os.scandir

    def scandir(path="."):
        if os.path.basename(path) in ("lost+found", "Happy"):
            raise PermissionError(13, "Permission denied", path)
        return real_scandir(path)

    # the layout module's own `os`: datasets 2.14 swaps it for a patched copy once this package's builder has run
    monkeypatch.setattr(sys.modules["ferv39k_hf.archive.layout"].os, "scandir", scandir)
    from ferv39k_hf.archive.annotations import ClipRecord
    from ferv39k_hf.archive.clipfiles import ClipDamaged, ClipReader

    unlisted = find_layout(tmp_path)  # not a stop: each clip in the folder is a per-clip problem (issue 25)
    assert str(tmp_path / "2_ClipsforFaceCrop/Action/Happy") in [u.name for u in unlisted.unsafe]
    with pytest.raises(ClipDamaged, match=r"Action/Happy cannot be listed \(Permission denied\)"):
        ClipReader(unlisted).read(ClipRecord("Action/Happy/0000", "Action", "Happy", "train", "train_All.csv", 1))
    (tmp_path / "2_ClipsforFaceCrop/Action/Happy").rename(tmp_path / "2_ClipsforFaceCrop/Action/Glad")
    (tmp_path / "3_ClipsforScenImages/Action/Happy").rename(tmp_path / "3_ClipsforScenImages/Action/Glad")
    (tmp_path / "0_7_LabelClips/Action/Happy").rename(tmp_path / "0_7_LabelClips/Action/Glad")
    layout = find_layout(tmp_path)
    assert [(u.container, u.name) for u in layout.unsafe] == [(None, str(tmp_path / "lost+found"))]
    assert "Action/Glad/0000" in layout.part("faces").clip_ids()
