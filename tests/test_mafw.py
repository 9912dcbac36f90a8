"""MAFW through build, load_dataset and fold(): single and compound sets, label orders, captions, list variants."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import datasets
import pytest
from dfer_checks import check_every_fold, mafw_folds, natural_differs

import ferv39k_hf
from ferv39k_hf.archive.annotations import AnnotationError
from ferv39k_hf.dataset.export import build_dataset_folder
from ferv39k_hf.dfer_taxonomy import MAFW
from ferv39k_hf.synthetic_dfer import write_dfer_sample


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mafw") / "download"
    write_dfer_sample(root, "mafw", per_class=2, videos=False)
    return root


def test_single_set_every_fold_exact_with_captions(archive: Path, tmp_path: Path) -> None:
    out = tmp_path / "mafw"
    result = build_dataset_folder(archive, out)
    assert result.dataset == "mafw" and result.config == "single"
    ds = datasets.load_dataset(str(out))
    clips = ds["clips"]
    assert clips.features["label"].names == MAFW.label_names("mae-dfer")
    check_every_fold(ds, mafw_folds(archive, "single"), archive / "MAFW" / "data" / "faces")
    assert clips.num_rows == 22
    row = clips.select_columns(["clip_id", "caption_en", "caption_zh"])[0]
    assert row["caption_en"].startswith(f"synthetic clip {row['clip_id']}") and row["caption_zh"].startswith("第")
    report = json.loads((out / "build_report.json").read_text())
    assert report["encodings"][str(archive / "MAFW" / "single_label.txt")] == "gbk"
    assert report["unlisted"]["count"] == 3  # the compound set's clips are listed (in the other set)


@pytest.mark.parametrize("order", ["s2d", "dfer-clip"])
def test_label_orders_by_name(archive: Path, tmp_path: Path, order: str) -> None:
    out = tmp_path / order
    build_dataset_folder(archive, out, label_order=order)
    ds = datasets.load_dataset(str(out))
    names = ds["clips"].features["label"].names
    assert names == MAFW.label_names(order)
    assert names[:3] == (["anger", "anxiety", "contempt"] if order == "s2d" else ["happiness", "sadness", "neutral"])
    check_every_fold(ds, mafw_folds(archive, "single"), archive / "MAFW" / "data" / "faces")
    assert f"ferv39k_label_order: {order}" in (out / "README.md").read_text()


def test_compound_set_is_multi_label(archive: Path, tmp_path: Path) -> None:
    out = tmp_path / "compound"
    build_dataset_folder(archive, out, config="compound")
    ds = datasets.load_dataset(str(out))
    assert isinstance(ds["clips"].features["labels"].feature, datasets.ClassLabel)
    expected = mafw_folds(archive, "compound")
    check_every_fold(ds, expected, archive / "MAFW" / "data" / "faces", label_column="labels")
    assert all(len(r["labels"]) >= 2 for r in ds["clips"].select_columns(["labels"]).to_list())


def test_list_root_and_frame_folder_variants(archive: Path, tmp_path: Path) -> None:
    """Train_Test_Set instead of 'Train & Test Set', frames under data/frames/frames_crop_align_224, PNG frames."""
    root = tmp_path / "variant"
    shutil.copytree(archive, root)
    (root / "MAFW" / "Train & Test Set").rename(root / "MAFW" / "Train_Test_Set")
    aligned = root / "MAFW" / "data" / "frames" / "frames_crop_align_224"
    aligned.parent.mkdir()
    (root / "MAFW" / "data" / "faces").rename(aligned)
    assert natural_differs(aligned)[0] > 0 and any(aligned.rglob("*.png"))
    out = tmp_path / "out"
    build_dataset_folder(root, out, dataset="mafw")
    check_every_fold(datasets.load_dataset(str(out)), mafw_folds(root, "single"), aligned)


def test_gbk_fold_list_and_unknown_word(archive: Path, tmp_path: Path) -> None:
    root = tmp_path / "gbk"
    shutil.copytree(archive, root)
    path = root / "MAFW" / "Train & Test Set" / "single" / "no_caption" / "set_2" / "test.txt"
    lines = path.read_text().splitlines()
    path.write_bytes(("\n".join(lines) + "\n").encode("gbk") + "00003.mp4 愤怒\n".encode("gbk"))
    with pytest.raises(AnnotationError, match=rf"set_2/test\.txt:{len(lines) + 1}: .*outside MAFW's 11 classes"):
        build_dataset_folder(root, tmp_path / "out")
    path.write_bytes(("\n".join(lines) + "\n").encode("gbk"))
    result = build_dataset_folder(root, tmp_path / "out2")
    assert result.counts["clips"] == 22


def test_load_fold_from_archive(archive: Path, tmp_path: Path) -> None:
    split = ferv39k_hf.load(str(archive), fold=5, label_order="s2d", cache_dir=str(tmp_path / "cache"))
    expected = mafw_folds(archive, "single")[5]
    for name in ("train", "test"):
        got = {r["clip_id"]: split[name].features["label"].int2str(r["label"])
               for r in split[name].select_columns(["clip_id", "label"]).to_list()}
        assert got == expected[name]


def test_run_folds_aggregates_mean_and_std(archive: Path, tmp_path: Path) -> None:
    from ferv39k_hf.metrics.folds import run_folds

    out = tmp_path / "built"
    build_dataset_folder(archive, out)
    ds = datasets.load_dataset(str(out))
    seen = []

    def train_and_score(split, k):  # a stand-in for training: the share of test clips of class 0
        assert set(split) == {"train", "test"}
        seen.append((k, split["train"].num_rows, split["test"].num_rows))
        labels = split["test"]["label"]
        return {"eval_war": sum(lab == 0 for lab in labels) / len(labels), "eval_uar": k / 10}

    summary = run_folds(ds, train_and_score)
    expected = mafw_folds(archive, "single")
    assert seen == [(k, len(expected[k]["train"]), len(expected[k]["test"])) for k in range(1, 6)]
    assert summary["uar_mean"] == pytest.approx(0.3)
    assert summary["uar_std"] == pytest.approx(float(__import__("numpy").std([0.1, 0.2, 0.3, 0.4, 0.5], ddof=1)))


@pytest.mark.parametrize("fmt", ["emoclip", "s2d", "dfer-clip", "mae-dfer"])
def test_codebase_lists_round_trip(archive: Path, tmp_path: Path, fmt: str) -> None:
    from ferv39k_hf.archive.dfer_lists import check_dfer_lists, list_names, write_dfer_lists

    write_dfer_lists(archive, tmp_path / fmt, "mafw", fmt)
    expected = mafw_folds(archive, "single")
    for k in (1, 4):
        names = list_names("mafw", fmt, k)
        checks = check_dfer_lists(archive, "mafw", fmt, [tmp_path / fmt / names[s] for s in ("train", "test")])
        for check, split in zip(checks, ("train", "test")):
            assert not check.problems and not check.frame_counts, check.problems
            assert check.clips == expected[k][split]
    if fmt == "emoclip":
        line = (tmp_path / fmt / "set_1" / "train.txt").read_text().splitlines()[0]
        assert line.count("\t") == 2 and "synthetic clip" in line


def test_sample_command_zipped_and_verify(tmp_path: Path, capsys) -> None:
    from ferv39k_hf.cli import main

    out = tmp_path / "mafw"
    assert main(["sample", "--dataset", "mafw", "--zip", "--parts", "faces", str(out)]) == 0
    assert "synthetic MAFW-shaped archive (no MAFW data)" in capsys.readouterr().out
    assert (out / "MAFW" / "data" / "faces.zip").is_file() and not (out / "MAFW" / "data" / "clips.zip").exists()
    assert main(["verify", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "found a MAFW archive" in printed and "read as GBK" in printed and "OK: no problem found" in printed
    assert main(["verify", str(out), "--config", "videos"]) == 1  # --parts faces wrote no mp4
    assert "no videos folder of MAFW clips" in capsys.readouterr().err
