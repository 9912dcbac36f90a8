"""The central directory reader against zipfile: the same names and numbers, the same refusals, any chunking."""

import io
import random
import struct
import zipfile
import zlib

import numpy as np
import pytest

from ferv39k_hf.archive import zipdir
from ferv39k_hf.archive.zipdir import BAD_ENTRY, ZipDirectoryError, read_directory
from ferv39k_hf.archive.zipindex import index_zip
from ferv39k_hf.errors import LayoutError

_LOCAL = struct.Struct("<4s2B4HL2L2H")
_CENTRAL = struct.Struct("<4s4B4HL2L5H2L")


def raw_zip(members, prefix=b"", comment=b"", zip64_end=False):
    """A zip written byte by byte: members are (name bytes, data, flag bits, central extra, 32-bit fields or None).

    The last item, when given, replaces (compress size, file size, header offset) in the central
    header, e.g. 0xFFFFFFFF with the real numbers in a zip64 extra field.
    """
    out, central = bytearray(prefix), bytearray()
    for name, data, flags, extra, fields in members:
        offset = len(out) - len(prefix)
        crc = zlib.crc32(data)
        out += _LOCAL.pack(b"PK\x03\x04", 20, 0, flags, 0, 0, 33, crc, len(data), len(data), len(name), 0) + name + data
        csize, size, where = fields or (len(data), len(data), offset)
        central += _CENTRAL.pack(b"PK\x01\x02", 20, 3, 20, 0, flags, 0, 0, 33, crc, csize, size, len(name),
                                 len(extra), 0, 0, 0, 0o100644 << 16, where) + name + extra
    start = len(out) - len(prefix)
    out += central
    count = len(members)
    if zip64_end:
        end64 = len(out) - len(prefix)
        out += struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, count, count, len(central), start)
        out += struct.pack("<4sLQL", b"PK\x06\x07", 0, end64, 1)
        count, start, size = 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF
    else:
        size = len(central)
    out += struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, count, count, size, start, len(comment)) + comment
    return bytes(out)


def ours(path):
    import os

    fd = os.open(path, os.O_RDONLY)
    try:
        chunks = list(read_directory(fd, os.fstat(fd).st_size))
    finally:
        os.close(fd)
    names = [name for chunk in chunks for name in chunk.names]
    numbers = np.concatenate([chunk.numbers for chunk in chunks]) if chunks else np.empty((0, 6), np.uint64)
    attrs = np.concatenate([chunk.external_attr for chunk in chunks]) if chunks else np.empty(0, np.uint32)
    return names, numbers, attrs


def theirs(path):
    with zipfile.ZipFile(path) as archive:
        infos = archive.infolist()
    numbers = [(i.header_offset, i.compress_size, i.file_size, i.CRC, i.compress_type, i.flag_bits) for i in infos]
    return [i.filename for i in infos], np.array(numbers, np.uint64).reshape(-1, 6), [i.external_attr for i in infos]


def assert_same(path):
    names, numbers, attrs = ours(path)
    want_names, want_numbers, want_attrs = theirs(path)
    assert names == want_names
    assert numbers.tolist() == want_numbers.tolist()
    assert attrs.tolist() == want_attrs


@pytest.mark.parametrize("chunk", [zipdir.CHUNK_BYTES, 300, 50])  # 50: shorter than a record
def test_names_and_numbers_match_zipfile_across_chunks(tmp_path, monkeypatch, chunk):
    monkeypatch.setattr(zipdir, "CHUNK_BYTES", chunk)  # records straddle chunk ends, the walk resumes
    rng = random.Random(3)
    path = tmp_path / "a.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for i in range(400):
            name = f"2_ClipsforFaceCrop/Crime/Angry/{i // 30:04d}/" + "x" * rng.randrange(40) + f"{i:02d}.jpg"
            archive.writestr(name, rng.randbytes(rng.randrange(50)),
                             compress_type=rng.choice([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]))
        archive.writestr("4_setups/All_scenes/caf\u00e9.csv", b"utf-8 name")  # flag bit 11, mixed with cp437 names
        archive.comment = b"a comment after the end record"
    assert_same(path)


def test_a_name_holding_the_signature_and_odd_bytes(tmp_path, monkeypatch):
    monkeypatch.setattr(zipdir, "CHUNK_BYTES", 4096)
    members = [(b"a/PK\x01\x02" + b"y" * 60 + b"/00.jpg", b"1", 0, b"", None),  # breaks the signature chain
               (b"a/line\nbreak.jpg", b"2", 0, b"", None),  # not split as two names
               (b"a/cut\x00hidden.jpg", b"3", 0, b"", None),  # zipfile ends a name at its first NUL
               (b"a/\x82\x8a.jpg", b"4", 0, b"", None)] * 40  # cp437
    path = tmp_path / "odd.zip"
    path.write_bytes(raw_zip(members))
    assert_same(path)
    names = ours(path)[0]
    assert names[:4] == ["a/PK\x01\x02" + "y" * 60 + "/00.jpg", "a/line\nbreak.jpg", "a/cut", "a/\u00e9\u00e8.jpg"]


def test_prepended_bytes_comment_and_zip64_records(tmp_path):
    data = b"frame"
    zip64 = struct.pack("<HHQQQ", 1, 24, len(data), len(data), 0)  # file size, compress size, header offset
    members = [(b"f/00.jpg", data, 0, b"\x0a\x00\x04\x00abcd" + zip64, (0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF)),
               (b"f/01.jpg", data, 0x800, b"", None)]
    path = tmp_path / "z64.zip"
    path.write_bytes(raw_zip(members, prefix=b"#!self-extracting stub\n" * 10, comment=b"hello", zip64_end=True))
    assert_same(path)
    names, numbers, _ = ours(path)
    assert numbers[0, :3].tolist() == [230, len(data), len(data)]  # the offset moved past the 230-byte stub


@pytest.mark.parametrize("damage", ["not a zip", "bad magic", "truncated", "directory before the file",
                                    "short zip64 extra", "bad utf-8"])
def test_what_zipfile_refuses_is_refused(tmp_path, damage):
    members = [(b"f/00.jpg", b"x", 0, b"", None), (b"f/01.jpg", b"y", 0, b"", None)]
    data = bytearray(raw_zip(members))
    start = data.index(b"PK\x01\x02")
    if damage == "not a zip":
        data = data[:-22]
    elif damage == "bad magic":
        data[data.rindex(b"PK\x01\x02") + 1] ^= 0xFF
    elif damage == "truncated":  # 10 bytes after the last record, counted in the directory
        data = data[:-22] + b"PK\x01\x02garbage" [:10] + data[-22:]
        struct.pack_into("<L", data, len(data) - 10, len(data) - 22 - start)
    elif damage == "directory before the file":
        struct.pack_into("<L", data, len(data) - 10, 0x7FFFFFFF)
    elif damage == "short zip64 extra":
        data = bytearray(raw_zip([(b"f/00.jpg", b"x", 0, struct.pack("<HHL", 1, 4, 7), (1, 1, 0xFFFFFFFF))]))
    else:
        data = bytearray(raw_zip([(b"f/\xff\xfe.jpg", b"x", 0x800, b"", None)]))
    path = tmp_path / "bad.zip"
    path.write_bytes(bytes(data))
    with pytest.raises((zipfile.BadZipFile, UnicodeDecodeError)):
        theirs(path)
    with pytest.raises(ZipDirectoryError):
        ours(path)
    with pytest.raises(LayoutError, match="bad.zip: cannot read the zip file"):
        index_zip(str(path))


def test_offsets_and_sizes_past_the_file_are_marked_bad(tmp_path):
    members = [(b"f/00.jpg", b"x", 0, b"", (1, 1, 0)), (b"f/01.jpg", b"y", 1, b"", (10 ** 9, 10 ** 9, 40)),
               (b"f/02.jpg", b"z", 0, struct.pack("<HHQ", 1, 8, 1 << 63), (1, 1, 0xFFFFFFFF))]
    path = tmp_path / "lies.zip"
    path.write_bytes(raw_zip(members))
    numbers = ours(path)[1]
    assert int(numbers[0, 5]) & BAD_ENTRY == 0
    assert numbers[1].tolist() == [0, 0, 0, 0, 0, 1 | BAD_ENTRY]  # the encryption bit is kept
    assert numbers[2].tolist() == [0, 0, 0, 0, 0, BAD_ENTRY]


def test_seeded_damage_is_refused_or_read_as_zipfile_reads_it(tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for i in range(60):
            archive.writestr(f"2_ClipsforFaceCrop/Crime/Angry/{i // 20:04d}/{i:02d}.jpg", bytes([i]) * (i % 7))
    clean = buffer.getvalue()
    rng = random.Random(11)
    path = tmp_path / "m.zip"
    agreed = 0
    for _ in range(300):
        data = bytearray(clean)
        at = len(data) - 1 - rng.randrange(min(len(data), 4096))
        if rng.random() < 0.5:
            data[at] ^= 1 << rng.randrange(8)
        else:
            data[at:at + 4] = rng.choice([b"\xff\xff\xff\xff", b"\x00\x00\x00\x00", b"\x00\x00\x00\x80"])
        path.write_bytes(bytes(data))
        try:
            names, numbers, _ = ours(path)
        except ZipDirectoryError:
            continue
        try:
            want_names, want_numbers, _ = theirs(path)
        except Exception:  # zipfile also refuses what is read here (an extra field it checks; a version)
            continue
        assert names == want_names
        good = (numbers[:, 5] & BAD_ENTRY) == 0
        assert numbers[good].tolist() == want_numbers[good].tolist()
        agreed += 1
    assert agreed > 100  # most single-byte damage leaves a readable directory


def test_fullsize_bench_runs_end_to_end_at_a_small_scale(tmp_path):
    """bench/fullsize.py at 0.1% of the clips: the zip it writes has the planned members; discovery finds every clip."""
    import importlib.util
    import json
    from pathlib import Path

    from ferv39k_hf.synthetic import plan_sample

    spec = importlib.util.spec_from_file_location("fullsize", Path(__file__).parent.parent / "bench" / "fullsize.py")
    fullsize = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fullsize)
    out = tmp_path / "fullsize.json"
    assert fullsize.main(["--scale", "0.001", "--rounds", "1", "--workdir", str(tmp_path), "--json", str(out)]) == 0
    methods = json.loads(out.read_text())["methods"]
    plan = plan_sample(scale=0.001)
    frames = sum(clip.num_frames for clip in plan.clips)
    assert methods["find_layout"]["clips"] == len(plan.clips)
    assert frames < methods["infolist"]["members"] < frames + 4 * len(plan.clips)  # frames and folder entries
    assert all(row["peak_mb"] > 0 and row["seconds"] > 0 for row in methods.values())
    assert not (tmp_path / "FERV39k").exists()  # the archive is removed unless --keep
