"""Layouts read from zips: damaged members, zip variants, worker processes, the sample's zip form."""

import importlib.util
import io
import multiprocessing
import os
import pickle
import zipfile

import pytest
from test_layout import archive_files, form_zipped_exports, snapshot, summary, write_tree  # noqa: F401  (helpers and fixtures of test_layout)

from ferv39k_hf.archive import ziparchive
from ferv39k_hf.archive.layout import find_layout
from ferv39k_hf.errors import LayoutError


def test_damaged_zip_member_is_an_error_naming_it(tmp_path):
    write_tree(tmp_path, {k: v for k, v in archive_files().items() if k.startswith("4_")})
    with zipfile.ZipFile(tmp_path / "f.zip", "w") as archive:  # stored, so the bytes are findable
        archive.writestr("2_ClipsforFaceCrop/Crime/Angry/0000/00.jpg", b"ORIGINAL-FRAME-BYTES")
    data = (tmp_path / "f.zip").read_bytes()
    layout = find_layout(tmp_path)
    (tmp_path / "f.zip").write_bytes(data.replace(b"ORIGINAL", b"DAMAGED!"))
    ziparchive.close_handles()
    part = layout.part("faces")
    with pytest.raises(LayoutError, match=r"f\.zip!2_ClipsforFaceCrop/Crime/Angry/0000/00\.jpg: .*CRC"):
        part.read(part.frames("Crime/Angry/0000")[0])


class Unseekable(io.RawIOBase):
    """A stream zipfile cannot seek back in, so it writes data descriptors after each member."""

    def __init__(self, handle):
        self.handle = handle

    def writable(self):
        return True

    def write(self, data):
        return self.handle.write(data)


def test_zip_variants_read_the_same_bytes(tmp_path):
    """Data descriptors, zip64 local headers, deflate, stored and bzip2 members all read back exactly."""
    write_tree(tmp_path, {k: v for k, v in archive_files().items() if k.startswith("4_")})
    frame = bytes(range(256)) * 40
    with open(tmp_path / "streamed.zip", "wb") as handle:
        with zipfile.ZipFile(Unseekable(handle), "w", compression=zipfile.ZIP_DEFLATED) as archive:
            with archive.open("2_ClipsforFaceCrop/Crime/Angry/0000/00.jpg", "w") as member:
                member.write(frame)
    with zipfile.ZipFile(tmp_path / "zip64.zip", "w") as archive:
        with archive.open("2_ClipsforFaceCrop/Crime/Angry/0000/01.jpg", "w", force_zip64=True) as member:
            member.write(frame[::-1])
    with zipfile.ZipFile(tmp_path / "bzip2.zip", "w", compression=zipfile.ZIP_BZIP2) as archive:
        archive.writestr("2_ClipsforFaceCrop/Crime/Angry/0000/02.jpg", frame[::2])
    (tmp_path / "linked.zip").symlink_to(tmp_path / "bzip2.zip")  # the same zip twice: indexed once
    part = find_layout(tmp_path).part("faces")
    refs = part.frames("Crime/Angry/0000")
    assert [part.read(r) for r in refs] == [frame, frame[::-1], frame[::2]]
    assert [r.size for r in refs] == [len(frame), len(frame), len(frame) // 2]
    assert len(part.clip_locations("Crime/Angry/0000")) == 3


def read_everything(layout):
    """In a worker process: every frame and video of the unpickled layout."""
    return {kind: {clip: [part.read(ref) for ref in ([part.video(clip)] if kind == "videos" else part.frames(clip))]
                   for clip in part.clip_ids()}
            for kind, part in layout.parts.items()}


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_layout_pickles_and_reads_zips_in_worker_processes(tmp_path, method):
    if method not in multiprocessing.get_all_start_methods():
        pytest.skip(f"no {method} start method here")
    form_zipped_exports(tmp_path, archive_files())
    layout = find_layout(tmp_path)
    expected = read_everything(layout)  # the parent now holds cached zip handles
    assert pickle.loads(pickle.dumps(layout)).parts["faces"].clip_ids() == layout.parts["faces"].clip_ids()
    with multiprocessing.get_context(method).Pool(2) as pool:
        results = pool.map(read_everything, [layout, layout])
    assert results == [expected, expected]


@pytest.mark.skipif(importlib.util.find_spec("ferv39k_hf.synthetic") is None, reason="synthetic not written yet")
@pytest.mark.slow  # run by .ci/run's slow step; over 3 s
def test_sample_archive_and_its_zip_form_agree(tmp_path):
    from ferv39k_hf.synthetic import write_sample_archive

    for zipped in (False, True):  # one scene keeps it quick; the layout code does not care which
        write_sample_archive(tmp_path / str(zipped), seed=0, scenes=("Crime",), zip=zipped)
    before = snapshot(tmp_path)
    unpacked, zipped = find_layout(tmp_path / "False"), find_layout(tmp_path / "True")
    assert any(name.lower().endswith(".zip") for _, _, names in os.walk(tmp_path / "True") for name in names)
    assert all(r.container is None for r in (unpacked.split_files["train"].ref, unpacked.split_files["test"].ref))
    assert zipped.split_files["train"].ref.container is not None
    assert sorted(unpacked.parts) == sorted(zipped.parts) == ["faces", "scenes", "videos"]
    assert summary(unpacked) == summary(zipped)
    assert unpacked.parts["faces"].clip_ids() and zipped.unsafe == [] == unpacked.unsafe
    assert snapshot(tmp_path) == before
