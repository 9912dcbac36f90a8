"""DFEW through build, load_dataset, fold(), load(fold=k), with the variants and bad inputs the facts name."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import datasets
import pytest
from dfer_checks import check_every_fold, dfew_folds, frame_files, natural_differs

import ferv39k_hf
from ferv39k_hf.archive.annotations import AnnotationError
from ferv39k_hf.cli import main
from ferv39k_hf.dataset.export import build_dataset_folder
from ferv39k_hf.errors import LayoutError
from ferv39k_hf.synthetic_dfer import write_dfer_sample

# datasets < 4 names a list feature Sequence
_FRAMES_UNDECODED = getattr(datasets, "List", datasets.Sequence)(datasets.Image(decode=False))


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("dfew") / "download"
    write_dfer_sample(root, "dfew", per_class=2, videos=False)
    # the official README's spelling for one folder, the release's for the other
    split = root / "DFEW" / "EmoLabel_DataSplit"
    (split / "test(single-labeled)").rename(split / "test(single_labeled)")
    return root


def _csv(root: Path, split: str, k: int) -> Path:
    return next(p for p in root.rglob(f"set_{k}.csv") if p.parent.name.lower().startswith(split))


def test_sample_has_the_variants(archive: Path) -> None:
    frames = archive / "DFEW" / "Clip" / "clip_224x224"
    differs, short = natural_differs(frames)
    assert differs > 0 and short > 0
    raw = _csv(archive, "train", 2).read_bytes()
    assert b"\r\n" in raw and raw.startswith(b"video_name,label")
    assert any(line[:1] != b"0" for line in _csv(archive, "test", 3).read_bytes().splitlines()[1:])  # unpadded


def test_build_every_fold_exact(archive: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "dfew"
    assert main(["build", str(archive), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "found a DFEW archive" in printed and "unlisted         3" in printed
    ds = datasets.load_dataset(str(out))
    assert list(ds) == ["clips"] and ds["clips"].features["label"].names == list(ferv39k_hf.dfer_taxonomy.DFEW_CLASSES)
    expected = dfew_folds(archive)
    seen = check_every_fold(ds, expected, archive / "DFEW" / "Clip" / "clip_224x224")
    assert len(seen) == ds["clips"].num_rows == 14  # every frame stored once
    report = json.loads((out / "build_report.json").read_text())
    assert report["dataset"] == "dfew" and report["unlisted"]["count"] == 3 and not report["skipped"]
    assert "label order: dfew" in (out / "README.md").read_text().lower()


def test_16f_config_and_alphabetical_order(archive: Path, tmp_path: Path) -> None:
    out = tmp_path / "16f"
    build_dataset_folder(archive, out, config="clip_224x224_16f", label_order="alphabetical")
    ds = datasets.load_dataset(str(out))["clips"]
    assert set(ds["num_frames"]) == {16}
    assert ds.features["label"].names == sorted(ds.features["label"].names)
    folds = dfew_folds(archive)
    words = {**folds[1]["train"], **folds[1]["test"]}
    for row in ds.select_columns(["clip_id", "label"]).to_list():
        assert ds.features["label"].int2str(row["label"]) == words[row["clip_id"]]
    first = ds.cast_column("frames", _FRAMES_UNDECODED)[0]
    assert [f["bytes"] for f in first["frames"]] == frame_files(archive / "DFEW" / "Clip" / "clip_224x224_16f",
                                                                first["clip_id"])


def test_load_fold_from_archive_matches_lists(archive: Path, tmp_path: Path) -> None:
    split = ferv39k_hf.load(str(archive), fold=4, cache_dir=str(tmp_path / "cache"))
    expected = dfew_folds(archive)[4]
    for name in ("train", "test"):
        got = {r["clip_id"]: split[name].features["label"].int2str(r["label"])
               for r in split[name].select_columns(["clip_id", "label"]).to_list()}
        assert got == expected[name]


def test_zipped_archive_builds_the_same_rows(tmp_path: Path) -> None:
    root = tmp_path / "zipped"
    write_dfer_sample(root, "dfew", per_class=1, videos=False, zip=True)
    assert (root / "DFEW" / "Clip" / "clip_224x224.zip").is_file()
    out = tmp_path / "out"
    build_dataset_folder(root, out, dataset="dfew")
    ds = datasets.load_dataset(str(out))["clips"].cast_column("frames", _FRAMES_UNDECODED)
    plain = tmp_path / "plain"
    write_dfer_sample(plain, "dfew", per_class=1, videos=False)
    folder = plain / "DFEW" / "Clip" / "clip_224x224"
    for row in ds.to_list():
        assert [f["bytes"] for f in row["frames"]] == frame_files(folder, row["clip_id"])


def _copy(archive: Path, tmp_path: Path) -> Path:
    root = tmp_path / "copy"
    shutil.copytree(archive, root)
    return root


def test_list_naming_a_missing_clip_names_file_and_line(archive: Path, tmp_path: Path) -> None:
    root = _copy(archive, tmp_path)
    path = _csv(root, "test", 2)
    path.write_bytes(path.read_bytes() + b"99999,1\r\n")
    lines = path.read_bytes().count(b"\n")
    with pytest.raises(AnnotationError, match=rf"set_2\.csv:{lines}: clip 99999: no clip 99999"):
        build_dataset_folder(root, tmp_path / "out")


def test_clip_in_two_test_sets(archive: Path, tmp_path: Path) -> None:
    root = _copy(archive, tmp_path)
    first = _csv(root, "test", 1).read_text().splitlines()[1]
    path = _csv(root, "test", 5)
    path.write_text(path.read_text() + first + "\n")
    two_folds = r"clip \d{5}: listed in the test sets of two folds: fold 1 \(.*set_1\.csv:\d+\) and fold 5"
    with pytest.raises(AnnotationError, match=two_folds):
        build_dataset_folder(root, tmp_path / "out")


def test_label_outside_classes(archive: Path, tmp_path: Path) -> None:
    root = _copy(archive, tmp_path)
    path = _csv(root, "train", 3)
    lines = path.read_text().splitlines()
    lines[2] = lines[2].split(",")[0] + ",8"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(AnnotationError, match=r"set_3\.csv:3: .*label '8' is outside DFEW's 7 classes"):
        build_dataset_folder(root, tmp_path / "out")


def test_fold_file_missing(archive: Path, tmp_path: Path) -> None:
    root = _copy(archive, tmp_path)
    _csv(root, "test", 4).unlink()
    with pytest.raises(LayoutError, match="fold file missing for the single set: test of fold 4"):
        build_dataset_folder(root, tmp_path / "out")


def test_fold_refuses_ferv39k_rows_and_bad_k(archive: Path, tmp_path: Path) -> None:
    plain = datasets.Dataset.from_dict({"clip_id": ["a"], "label": [0]})
    with pytest.raises(ValueError, match="no test_fold or train_folds column"):
        ferv39k_hf.fold(plain, 1)
    folded = datasets.Dataset.from_dict({"clip_id": ["a"], "test_fold": [1], "train_folds": [[2, 3, 4, 5]]})
    with pytest.raises(ValueError, match="fold must be one of 1, 2, 3, 4, 5"):
        ferv39k_hf.fold(folded, 6)


def test_verify_says_dfew_and_names_a_damaged_frame(archive: Path, tmp_path: Path, capsys) -> None:
    assert main(["verify", str(archive)]) == 0
    printed = capsys.readouterr().out
    assert "found a DFEW archive" in printed and "unlisted: 3 clip(s)" in printed and "OK: no problem found" in printed
    root = _copy(archive, tmp_path)
    clip_id = _csv(root, "test", 1).read_text().splitlines()[1].split(",")[0]
    clip = root / "DFEW" / "Clip" / "clip_224x224" / f"{int(clip_id):05d}"
    victim = sorted(clip.iterdir())[0]
    victim.write_bytes(victim.read_bytes()[:100])
    assert main(["verify", str(root), "--dataset", "dfew"]) == 1
    printed = capsys.readouterr().out
    assert f"clip {int(clip_id):05d}: frame {int(clip_id):05d}/{victim.name}: truncated JPEG" in printed


@pytest.fixture(scope="module")
def built(archive: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("built") / "dfew"
    build_dataset_folder(archive, out)
    return out


def test_score_five_fold_files(archive: Path, built: Path, tmp_path: Path, capsys) -> None:
    folds = dfew_folds(archive)
    files, wars = [], []
    for k in range(1, 6):
        test = sorted(folds[k]["test"].items())
        wrong = test[0][0]  # one wrong prediction per fold: Happy <-> Sad
        lines = ["clip_id,prediction"] + [
            f"/any/prefix/DFEW_Frame_Face/{clip},{('Sad' if word == 'Happy' else 'Happy') if clip == wrong else word}"
            for clip, word in test]
        path = tmp_path / f"fold{k}.csv"
        path.write_text("\n".join(lines) + "\n")
        files.append(str(path))
        wars.append((len(test) - 1) / len(test))
    assert main(["score", *files, "--dataset", str(built), "--json", "--resamples", "200"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [f["war"] for f in report["folds"]] == pytest.approx(wars)
    assert report["war_mean"] == pytest.approx(sum(wars) / 5)
    assert report["war_std"] == pytest.approx(float(__import__("numpy").std(wars, ddof=1)))
    low, high = report["war_mean_ci"]
    assert low <= report["war_mean"] <= high and report["uar_mean"] < 1
    assert report["synthetic"] is True  # the sample's marker reached the card
    assert main(["score", *files, "--dataset", str(built), "--resamples", "200"]) == 0
    text = capsys.readouterr().out
    assert "5-fold mean" in text and "not ranked against published results" in text and "74.43" not in text
    from ferv39k_hf.metrics.folds import render_folds

    ranked = render_folds({**report, "synthetic": False})  # a real archive's folder: ranked among the papers
    assert "MAE-DFER" in ranked and "74.43" in ranked and "this run" in ranked
    assert main(["score", *files[:4], "--dataset", str(built)]) == 1
    assert "give 5 predictions files" in capsys.readouterr().err


@pytest.mark.parametrize("fmt", ["dfer-clip", "mae-dfer", "s2d"])
def test_codebase_lists_round_trip(archive: Path, tmp_path: Path, fmt: str) -> None:
    from ferv39k_hf.archive.dfer_lists import check_dfer_lists, list_names, write_dfer_lists

    result = write_dfer_lists(archive, tmp_path / fmt, "dfew", fmt)
    assert len(result.files) == 10
    folds = dfew_folds(archive)
    for k in range(1, 6):
        names = list_names("dfew", fmt, k)
        checks = check_dfer_lists(archive, "dfew", fmt, [tmp_path / fmt / names[s] for s in ("train", "test")])
        for check, split in zip(checks, ("train", "test")):
            assert not check.problems and not check.frame_counts, check.problems
            assert check.clips == folds[k][split]


def test_shipped_list_errors_are_named_by_line(archive: Path, tmp_path: Path, capsys) -> None:
    assert main(["lists", str(archive), "--format", "dfer-clip", "--out", str(tmp_path / "l")]) == 0
    path = tmp_path / "l" / "DFEW_set_1_test.txt"
    lines = path.read_text().splitlines()
    folder, frames, label = lines[0].split()
    lines[0] = f"{folder} {int(frames) + 5} {label}"  # a wrong frame count, as DFER-CLIP's shipped lists have
    lines[1] = lines[1].rsplit(" ", 1)[0] + f" {(int(lines[1].rsplit(' ', 1)[1]) + 1) % 7}"  # another class
    lines.append("/数据/DFEW_Frame_Face/99999 16 0")  # non-ASCII in GBK: the file is not UTF-8
    path.write_bytes("\n".join(lines).encode("gbk") + b"\n")
    capsys.readouterr()
    assert main(["lists", str(archive), "--format", "dfer-clip", "--check", str(path)]) == 1
    text = capsys.readouterr().out
    clip0 = folder.rsplit("/", 1)[1]
    assert f"{path}:1: clip {clip0}: the list says {int(frames) + 5} frames, the archive holds {frames}" in text
    assert f"{path}:2: clip " in text and "but the official lists say" in text
    assert f"{path}:{len(lines)}: clip 99999: not in the archive" in text
    assert "read as GBK" in text


def test_frames_split_over_zips_without_their_top_folder(tmp_path: Path) -> None:
    """DFEW's frames come as several zips; members may start at the clip folder (the zip's name says which part)."""
    import zipfile

    root = tmp_path / "parts"
    write_dfer_sample(root, "dfew", per_class=1, videos=False, zip=True)
    whole = root / "DFEW" / "Clip" / "clip_224x224.zip"
    with zipfile.ZipFile(whole) as source:
        members = [(info.filename.split("/", 1)[1], source.read(info)) for info in source.infolist()]
    whole.unlink()
    for piece in (1, 2):
        with zipfile.ZipFile(root / "DFEW" / "Clip" / f"clip_224x224_{piece:02d}.zip", "w") as target:
            for name, data in members[piece - 1::2]:  # each clip's frames spread over both zips
                target.writestr(name, data)
    out = tmp_path / "out"
    build_dataset_folder(root, out)
    ds = datasets.load_dataset(str(out))["clips"].cast_column("frames", _FRAMES_UNDECODED)
    plain = tmp_path / "plain"
    write_dfer_sample(plain, "dfew", per_class=1, videos=False)
    for row in ds.to_list():
        assert [f["bytes"] for f in row["frames"]] == frame_files(plain / "DFEW" / "Clip" / "clip_224x224",
                                                                 row["clip_id"])


def test_skip_reports_every_bad_line_and_builds_the_rest(archive: Path, tmp_path: Path) -> None:
    root = _copy(archive, tmp_path)
    path = _csv(root, "test", 2)
    path.write_bytes(path.read_bytes() + b"99999,1\r\n77777,3\r\n")
    result = build_dataset_folder(root, tmp_path / "out", on_error="skip")
    assert sorted(p.clip_id for p in result.skipped) == ["77777", "99999"]
    report = json.loads((tmp_path / "out" / "build_report.json").read_text())
    assert report["lines"] == report["counts"]["clips"] + 2 and len(report["skipped"]) == 2
    check_every_fold(datasets.load_dataset(str(tmp_path / "out")), dfew_folds(archive),
                     archive / "DFEW" / "Clip" / "clip_224x224")


def test_output_is_identical_for_any_num_proc(archive: Path, built: Path, tmp_path: Path) -> None:
    out = tmp_path / built.name  # the same folder name: the card names it
    build_dataset_folder(archive, out, num_proc=2)
    names = lambda folder: sorted(p.name for p in (folder / "data" / "clip_224x224").iterdir())  # noqa: E731
    assert names(out) == names(built)
    assert (out / "README.md").read_text() == (built / "README.md").read_text()


def test_load_follows_a_rewritten_frame(archive: Path, tmp_path: Path) -> None:
    root = _copy(archive, tmp_path)
    cache = str(tmp_path / "cache")
    first = ferv39k_hf.load(str(root), cache_dir=cache)["clips"]
    clip_id = first[0]["clip_id"]
    frame_path = sorted((root / "DFEW" / "Clip" / "clip_224x224" / clip_id).iterdir())[0]
    other = sorted((root / "DFEW" / "Clip" / "clip_224x224" / first[1]["clip_id"]).iterdir())[0].read_bytes()
    frame_path.write_bytes(other)
    again = ferv39k_hf.undecoded_frames(ferv39k_hf.load(str(root), cache_dir=cache)["clips"])
    row = next(r for r in again.to_list() if r["clip_id"] == clip_id)
    assert other in [f["bytes"] for f in row["frames"]]


@pytest.mark.parametrize("make", ["fifo", "folder", "dangling link", "link out of the archive"])
def test_a_frame_that_is_not_a_file_is_named_by_verify_and_build(archive: Path, tmp_path: Path, make: str,
                                                                   capsys) -> None:
    root = _copy(archive, tmp_path)
    clip_id = _csv(root, "test", 1).read_text().splitlines()[1].split(",")[0]
    victim = sorted((root / "DFEW" / "Clip" / "clip_224x224" / f"{int(clip_id):05d}").iterdir())[0]
    victim.unlink()
    if make == "fifo":
        os.mkfifo(victim)
    elif make == "folder":
        victim.mkdir()
    elif make == "dangling link":
        victim.symlink_to(tmp_path / "nowhere.jpg")
    else:
        victim.symlink_to("/dev/zero")
    assert main(["verify", str(root), "--dataset", "dfew"]) == 1
    assert victim.name in capsys.readouterr().out
    assert main(["build", str(root), "--out", str(tmp_path / "out")]) == 1
    assert victim.name in capsys.readouterr().err
    result = build_dataset_folder(root, tmp_path / "skip", on_error="skip")
    assert [p.clip_id for p in result.skipped] == [f"{int(clip_id):05d}"]
