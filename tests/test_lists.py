"""Community split lists: written by `ferv39k-hf lists`, read back by build, verify and load, checked line by line."""

import hashlib
import json
import random
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

import ferv39k_hf
from ferv39k_hf.archive.annotations import AnnotationError
from ferv39k_hf.archive.layout import find_layout
from ferv39k_hf.archive.lists import FILE_NAMES, FORMATS, ListError, detect_format, open_lists, parse_list_text
from ferv39k_hf.archive.listwriter import MARKER, REPORT, write_lists
from ferv39k_hf.archive.outdirs import OutputRefused
from ferv39k_hf.archive.verify import verify_archive
from ferv39k_hf.cli import main
from ferv39k_hf.dataset.export import build_dataset_folder
from ferv39k_hf.dataset.fingerprint import archive_fingerprint
from ferv39k_hf.errors import BuildError
from ferv39k_hf.synthetic import write_sample_archive
from ferv39k_hf.taxonomy import CLASS_WORDS, DFEW_ORDER

FOREIGN = "/mnt/somebody/else/FERV39K/2_ClipsforFaceCrop"


def table_rows(folder: Path):
    """split -> {clip_id: row}, read straight from the Parquet shards, frames as a digest of their bytes and paths."""
    out = {}
    for shard in sorted((folder / "data" / "faces").glob("*.parquet")):
        split = shard.name.split("-")[0]
        for row in pq.read_table(shard).to_pylist():
            digest = hashlib.sha256()
            for frame in row.pop("frames"):
                digest.update(frame["path"].encode() + b"\0" + frame["bytes"])
            row["frames"] = digest.hexdigest()
            out.setdefault(split, {})[row["clip_id"]] = row
    return out


def shuffle_lines(source: Path, target: Path, seed: int, newline: str = "\n") -> Path:
    lines = source.read_text().splitlines()
    header = [lines.pop(0)] if lines[0] == "path,id" else []
    random.Random(seed).shuffle(lines)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes("".join(line + newline for line in header + lines).encode())
    return target


@pytest.fixture(scope="module")
def written(sample_archive, tmp_path_factory):
    """The sample archive's splits written in every format with a foreign prefix: format -> (train, test)."""
    base = tmp_path_factory.mktemp("lists")
    files = {}
    for fmt in FORMATS:
        result = write_lists(sample_archive, base / fmt, fmt=fmt, prefix=FOREIGN, progress=False)
        assert [p.name for p in result.files.values()] == list(FILE_NAMES[fmt])
        files[fmt] = (result.files["train"], result.files["test"])
    return files


@pytest.fixture(scope="module")
def small_archive(tmp_path_factory):
    root = tmp_path_factory.mktemp("small") / "FERV39k"
    write_sample_archive(root, scale=0.002, parts=["faces"], scenes=["Action", "Crime", "War"], workers=1)
    return root


@pytest.fixture(scope="module")
def small_built(small_archive, tmp_path_factory):
    """The small archive built from its official split files."""
    out = tmp_path_factory.mktemp("small-built") / "ferv39k"
    build_dataset_folder(small_archive, out)
    return out


@pytest.fixture(scope="module")
def small_written(small_archive, tmp_path_factory):
    """The small archive's splits in every format, with a foreign prefix: format -> (train, test)."""
    base = tmp_path_factory.mktemp("small-lists")
    return {fmt: tuple(write_lists(small_archive, base / fmt, fmt=fmt, prefix=FOREIGN, progress=False).files.values())
            for fmt in FORMATS}


@pytest.mark.parametrize("fmt", FORMATS)
def test_shuffled_lists_with_a_foreign_prefix_build_the_official_rows(fmt, written, sample_archive, built_faces,
                                                                      tmp_path):
    newline = "\r\n" if fmt in ("mae-dfer", "s2d") else "\n"  # CRLF lines as Windows editors save them
    train = shuffle_lines(written[fmt][0], tmp_path / "in" / written[fmt][0].name, 1, newline)
    test = shuffle_lines(written[fmt][1], tmp_path / "in" / f"x-{written[fmt][1].name}", 2, newline)
    out = tmp_path / "built"
    result = build_dataset_folder(sample_archive, out, train_list=str(train), test_list=str(test))
    assert not result.skipped and not result.frame_count_mismatches
    assert table_rows(out) == table_rows(built_faces)
    report = json.loads((out / "build_report.json").read_text())
    assert [e["format"] for e in report["split_lists"]] == [fmt, fmt]
    assert report["frame_count_mismatches"] == []
    # the rows follow the list's order
    first = test.read_text().splitlines()[1 if fmt == "s2d" else 0]
    first_row = pq.read_table(sorted((out / "data" / "faces").glob("test-*.parquet"))[0]).column("clip_id")[0].as_py()
    assert first.replace(",", " ").split()[0].endswith(first_row)


def test_written_lines_use_each_codebases_order_and_true_frame_counts(written, sample_archive):
    records = {}
    for fmt in FORMATS:
        text = written[fmt][1].read_text()
        assert detect_format(text, "x") == fmt
        recs, problems, frames = parse_list_text(text, fmt, split="test", source="x")
        assert not problems
        records[fmt] = [r.clip_id for r in recs]
        if fmt == "dfer-clip":
            for clip_id, (count, _) in frames.items():
                assert count == len(list((sample_archive / "2_ClipsforFaceCrop" / clip_id).glob("*.jpg")))
    official = (sample_archive / "4_setups" / "All_scenes" / "test_All.csv").read_text().split()[0::2]
    assert all(ids == official for ids in records.values())
    dfer, s2d = (written[f][1].read_text().splitlines() for f in ("dfer-clip", "s2d"))
    assert s2d[0] == "path,id"
    for line in dfer:
        path, count, class_id = line.split(" ")
        assert path.startswith(FOREIGN + "/") and DFEW_ORDER[int(class_id)] == path.split("/")[-2]
    for line in s2d[1:]:
        path, class_id = line.split(",")
        assert CLASS_WORDS[int(class_id)] == path.split("/")[-2]


@pytest.mark.parametrize("text, fmt", [
    ("/a b/2_ClipsforFaceCrop/Crime/Angry/0063 24 3\n", "dfer-clip"),  # a space in the prefix
    ("C:\\data\\Crime\\Angry\\0063 3\r\n", "mae-dfer"),
    ("path,id\r\nCrime/Angry/0063,0\r\n", "s2d"),
    ("Crime/Angry/0063,0\n", "s2d"),
    ("path,label\nCrime/Angry/0063,0\n", "s2d"),
    ("\ufeffCrime/Angry/0063 Angry\n\n", "official"),
    ("x/Crime/Angry/0063 3\nx/Crime/Angry/0064 3\ngarbage\n", "mae-dfer"),  # the odd line is an error later
])
def test_the_format_is_told_from_the_content(text, fmt):
    assert detect_format(text.lstrip("\ufeff"), "f.txt") == fmt


@pytest.mark.parametrize("text, says", [
    ("", "fits official, dfer-clip, mae-dfer, s2d"),
    ("path,id\n", "no clip lines"),
    ("hello world\nnot a list\n", "not a split list in a known format: line 1"),
    ("x/Crime/Angry/0063 3\nx/Crime/Angry/0064 24 3\n", "more than one format (dfer-clip, mae-dfer"),
    ("x/Crime/Angry/0063 3\nfoo\nbar\n", "no format fits most lines"),
])
def test_ambiguous_or_garbage_content_is_refused_naming_the_file(text, says, tmp_path):
    path, other = tmp_path / "list.txt", tmp_path / "test.txt"
    path.write_text(text)
    other.write_text("x/Crime/Angry/0063 3\n")
    with pytest.raises(ListError) as err:
        open_lists(str(path), str(other))
    message = str(err.value)
    assert str(path) in message and says in message and "--list-format" in message


def test_forcing_a_format_reads_what_detection_cannot(tmp_path):
    train, test = tmp_path / "train.csv", tmp_path / "test.csv"
    train.write_text("path,id\nCrime/Angry/0063,0\n")
    test.write_text("")
    with pytest.raises(ListError, match="--list-format"):
        open_lists(str(train), str(test))
    lists = open_lists(str(train), str(test), "s2d")
    records, problems = lists.read()
    assert [r.clip_id for r in records] == ["Crime/Angry/0063"] and not problems


def _edit_line(path: Path, number: int, edit, out: Path) -> Path:
    lines = path.read_text().splitlines()
    lines[number - 1] = edit(lines[number - 1])
    out.write_text("\n".join(lines) + "\n")
    return out


def _wrong_class(line: str, fmt: str):
    """The line with its class changed to the next one, and the class word it now claims."""
    if fmt == "official":
        path, word = line.rsplit(" ", 1)
        new = CLASS_WORDS[(CLASS_WORDS.index(word) + 1) % 7]
        return f"{path} {new}", new
    head, class_id = line.rsplit("," if fmt == "s2d" else " ", 1)
    new_id = (int(class_id) + 1) % 7
    order = CLASS_WORDS if fmt == "s2d" else DFEW_ORDER
    return f"{head}{',' if fmt == 's2d' else ' '}{new_id}", order[new_id]


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_wrong_id_is_refused_by_file_and_line(fmt, written, sample_archive, tmp_path):
    train, test = written[fmt]
    line = test.read_text().splitlines()[6]
    changed, listed = _wrong_class(line, fmt)
    folder = line.replace(",", " ").split()[0].split("/")[-2]
    bad = _edit_line(test, 7, lambda _: changed, tmp_path / test.name)
    with pytest.raises(AnnotationError) as err:
        build_dataset_folder(sample_archive, tmp_path / "out", train_list=str(train), test_list=str(bad))
    assert f"{bad}:7" in str(err.value) and repr(listed) in str(err.value) and repr(folder) in str(err.value)
    assert not (tmp_path / "out").exists()
    if fmt != "dfer-clip":
        return
    code = main(["build", str(sample_archive), "--out", str(tmp_path / "cli"), "--train-list", str(train),
                 "--test-list", str(bad)])
    assert code == 1 and not (tmp_path / "cli").exists()
    report = verify_archive(sample_archive, train_list=str(train), test_list=str(bad), progress=False)
    [finding] = [f for f in report.findings if f.kind == "split-line"]
    assert (finding.file, finding.line) == (str(bad), 7) and listed in finding.reason and folder in finding.reason


def test_a_list_error_is_one_line_naming_the_file(small_archive, tmp_path, capsys):
    garbage, good = tmp_path / "train.txt", tmp_path / "test.txt"
    garbage.write_text("this is not\na split list\n")
    good.write_text("Action/Angry/0000 Angry\n")
    code = main(["build", str(small_archive), "--out", str(tmp_path / "out"), "--train-list", str(garbage),
                 "--test-list", str(good)])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1 and str(garbage) in err and "--list-format" in err
    code = main(["verify", str(small_archive), "--train-list", str(good)])
    assert code == 1 and "go together" in capsys.readouterr().err


def test_on_error_skip_puts_the_wrong_line_in_the_report(small_written, small_archive, small_built, tmp_path):
    train, test = small_written["mae-dfer"]
    bad = _edit_line(test, 3, lambda line: line[:-1] + str((int(line[-1]) + 2) % 7), tmp_path / "test.csv")
    clip_id = "/".join(bad.read_text().splitlines()[2].split(" ")[0].split("/")[-3:])
    out = tmp_path / "out"
    build_dataset_folder(small_archive, out, train_list=str(train), test_list=str(bad), on_error="skip")
    report = json.loads((out / "build_report.json").read_text())
    [entry] = report["skipped"]
    assert (entry["source"], entry["line"], entry["clip_id"]) == (str(bad), 3, clip_id)
    assert report["lines"] == sum(report["counts"].values()) + 1
    expected = table_rows(small_built)
    del expected["test"][clip_id]
    assert table_rows(out) == expected


def test_a_wrong_dfer_clip_frame_count_is_reported_never_used(small_written, small_archive, small_built, tmp_path):
    train, test = small_written["dfer-clip"]
    path, count, class_id = train.read_text().splitlines()[3].split(" ")
    clip_id = "/".join(path.split("/")[-3:])
    found = len(list((small_archive / "2_ClipsforFaceCrop" / clip_id).glob("*.jpg")))
    assert int(count) == found
    bad = _edit_line(train, 4, lambda line: f"{path} {found + 5} {class_id}", tmp_path / "FERV39K_train.txt")
    out = tmp_path / "out"
    result = build_dataset_folder(small_archive, out, train_list=str(bad), test_list=str(test))
    report = json.loads((out / "build_report.json").read_text())
    assert report["frame_count_mismatches"] == [
        {"clip_id": clip_id, "split": "train", "source": str(bad), "line": 4, "listed": found + 5, "found": found}]
    assert "frame counts: 1 list line(s)" in result.summary()
    assert table_rows(out) == table_rows(small_built)  # num_frames and frames come from the archive
    verified = verify_archive(small_archive, train_list=str(bad), test_list=str(test), progress=False)
    assert [(f.kind, f.clip_id, f.file, f.line) for f in verified.findings] == [("frame-count", clip_id, str(bad), 4)]


def test_a_listed_clip_absent_from_the_archive_is_handled_as_the_split_files_do(small_written, small_archive, tmp_path):
    train, test = small_written["s2d"]
    extra = tmp_path / "test.csv"
    extra.write_text(test.read_text() + "Action/Angry/9999,0\n")
    with pytest.raises(BuildError, match="clip Action/Angry/9999 .*test.csv:"):
        build_dataset_folder(small_archive, tmp_path / "out", train_list=str(train), test_list=str(extra))
    build_dataset_folder(small_archive, tmp_path / "skip", train_list=str(train), test_list=str(extra), on_error="skip")
    [entry] = json.loads((tmp_path / "skip" / "build_report.json").read_text())["skipped"]
    assert entry["clip_id"] == "Action/Angry/9999" and entry["line"] == len(extra.read_text().splitlines())
    report = verify_archive(small_archive, train_list=str(train), test_list=str(extra), progress=False)
    assert [(f.kind, f.clip_id) for f in report.findings] == [("missing-clip", "Action/Angry/9999")]


def test_the_card_and_the_cache_key_follow_the_lists(small_archive, tmp_path):
    lists = {}
    for fmt in ("official", "dfer-clip"):
        result = write_lists(small_archive, tmp_path / fmt, fmt=fmt, progress=False)
        lists[fmt] = [str(p) for p in result.files.values()]
    out = tmp_path / "built"
    build_dataset_folder(small_archive, out, train_list=lists["dfer-clip"][0], test_list=lists["dfer-clip"][1])
    card = (out / "README.md").read_text()
    meta = yaml.safe_load(card.split("---")[1])
    assert meta["ferv39k_split_lists"] == [
        {"split": split, "file": Path(path).name, "format": "dfer-clip",
         "sha256": hashlib.sha256(Path(path).read_bytes()).hexdigest()}
        for split, path in zip(("train", "test"), lists["dfer-clip"])]
    assert "--train-list FERV39K_train.txt --test-list FERV39K_test.txt" in card
    layout = find_layout(small_archive)
    keys = {archive_fingerprint(layout, "faces")}
    for fmt in ("official", "dfer-clip"):
        keys.add(archive_fingerprint(layout, "faces", open_lists(*lists[fmt])))
    test = Path(lists["official"][1])
    test.write_text("\n".join(test.read_text().splitlines()[1:]) + "\n")  # one clip fewer, same path
    keys.add(archive_fingerprint(layout, "faces", open_lists(*lists["official"])))
    assert len(keys) == 4


def test_load_reads_lists_and_never_serves_a_stale_cache(small_archive, tmp_path):
    result = write_lists(small_archive, tmp_path / "lists", fmt="mae-dfer", prefix=FOREIGN, progress=False)
    train, test = (str(p) for p in result.files.values())
    cache = str(tmp_path / "cache")
    ds = ferv39k_hf.load(small_archive, train_list=train, test_list=test, cache_dir=cache)
    official = ferv39k_hf.load(small_archive, cache_dir=cache)
    for split in ("train", "test"):
        assert sorted(ds[split]["clip_id"]) == sorted(official[split]["clip_id"])
    lines = Path(test).read_text().splitlines()
    dropped = "/".join(lines[0].split(" ")[0].split("/")[-3:])
    Path(test).write_text("\n".join(lines[1:]) + "\n")
    again = ferv39k_hf.load(small_archive, train_list=train, test_list=test, cache_dir=cache)
    assert sorted(again["test"]["clip_id"]) == sorted(set(official["test"]["clip_id"]) - {dropped})


def test_lists_output_is_never_in_the_archive_nor_over_a_users_file(small_archive, built_faces, tmp_path):
    with pytest.raises(OutputRefused, match="archive"):
        write_lists(small_archive, small_archive / "lists", fmt="s2d", progress=False)
    with pytest.raises(OutputRefused, match="ferv39k-hf build"):
        write_lists(small_archive, built_faces, fmt="s2d", progress=False)
    out = tmp_path / "annotation"
    out.mkdir()
    (out / "FERV39K_train.txt").write_text("the user's own list\n")
    with pytest.raises(OutputRefused, match="not written by ferv39k-hf lists"):
        write_lists(small_archive, out, fmt="dfer-clip", overwrite=True, progress=False)
    assert (out / "FERV39K_train.txt").read_text() == "the user's own list\n"
    write_lists(small_archive, out / "s2d", fmt="s2d", progress=False)
    with pytest.raises(OutputRefused, match="--overwrite"):
        write_lists(small_archive, out / "s2d", fmt="s2d", progress=False)
    write_lists(small_archive, out / "s2d", fmt="s2d", prefix="/new", overwrite=True, progress=False)
    assert (out / "s2d" / "test.csv").read_text().splitlines()[1].startswith("/new/")
    assert json.loads((out / "s2d" / MARKER).read_text())["tool"] == "ferv39k-hf lists"
    (out / "s2d" / "test.csv").write_text("edited by hand\n")
    with pytest.raises(OutputRefused, match="edited since"):
        write_lists(small_archive, out / "s2d", fmt="s2d", overwrite=True, progress=False)


def test_lists_refuses_or_skips_a_damaged_clip(small_archive, tmp_path):
    root = tmp_path / "FERV39k"
    import shutil

    shutil.copytree(small_archive, root)
    first = (root / "4_setups" / "All_scenes" / "test_All.csv").read_text().split()[0]
    for frame in (root / "2_ClipsforFaceCrop" / first).glob("*.jpg"):
        frame.unlink()
    with pytest.raises(BuildError, match=f"clip {first}"):
        write_lists(root, tmp_path / "out", fmt="dfer-clip", progress=False)
    assert not (tmp_path / "out").exists()
    code = main(["lists", str(root), "--format", "dfer-clip", "--out", str(tmp_path / "out"), "--on-error", "skip"])
    assert code == 0
    written = (tmp_path / "out" / "FERV39K_test.txt").read_text()
    assert first not in written and str(root / "2_ClipsforFaceCrop") in written  # default prefix: this archive
    [entry] = json.loads((tmp_path / "out" / REPORT).read_text())["left_out"]
    assert entry["clip_id"] == first and entry["kind"] == "empty-clip"


def test_list_files_are_size_bounded_like_split_files(tmp_path, monkeypatch):
    from ferv39k_hf import fileio
    from ferv39k_hf.errors import LayoutError

    train, test = tmp_path / "train.csv", tmp_path / "test.csv"
    train.write_text("x/Crime/Angry/0063 3\n" * 4)
    test.write_text("x/Crime/Angry/0064 3\n")
    monkeypatch.setattr(fileio, "MAX_SPLIT_FILE_BYTES", 40)
    with pytest.raises(LayoutError, match=f"{train}: 84 bytes, more than"):
        open_lists(str(train), str(test))


def test_the_examples_in_the_docstrings_run():
    import doctest

    import ferv39k_hf.archive.lists as module

    result = doctest.testmod(module)
    assert result.attempted >= 9 and result.failed == 0
