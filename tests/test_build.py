"""Archive -> builder / Parquet folder -> load_dataset: every clip, its metadata and its bytes."""

import shutil
import zipfile
from pathlib import Path

import datasets
import pytest

import ferv39k_hf
from ferv39k_hf.archive.annotations import parse_split_text
from ferv39k_hf.dataset.export import build_dataset_folder
from ferv39k_hf.taxonomy import SCENARIOS, SCENE_TO_SCENARIO, SCENES, label_names

# datasets >= 4 spells a variable-length list List, older releases Sequence
UNDECODED_FRAMES = getattr(datasets, "List", datasets.Sequence)(datasets.Image(decode=False))


def split_lines(root: Path, split: str):
    text = (root / "4_setups" / "All_scenes" / f"{split}_All.csv").read_text()
    records, problems = parse_split_text(text, split=split, source="x")
    assert not problems
    return records


def rows_by_id(dataset):
    dataset = dataset.cast_column("frames", UNDECODED_FRAMES)
    return {row["clip_id"]: row for row in dataset}


def assert_rows_match_archive(rows, root: Path, split: str, order: str = "alphabetical"):
    records = split_lines(root, split)
    assert sorted(rows) == sorted(r.clip_id for r in records), "every split line is exactly one row"
    words = label_names(order)
    for record in records:
        row = rows[record.clip_id]
        folder = root / "2_ClipsforFaceCrop" / record.clip_id
        files = sorted(folder.glob("*.jpg"))
        assert row["scene"] == SCENES.index(record.scene)
        assert row["scenario"] == SCENARIOS.index(SCENE_TO_SCENARIO[record.scene])
        assert words[row["label"]] == record.emotion
        assert row["num_frames"] == len(files) == len(row["frames"])
        assert [f["bytes"] for f in row["frames"]] == [f.read_bytes() for f in files]
        assert [f["path"] for f in row["frames"]] == [f"{record.clip_id}/{f.name}" for f in files]


def test_built_folder_holds_every_clip_and_its_bytes(built_faces, sample_archive):
    ds = datasets.load_dataset(str(built_faces))
    assert set(ds) == {"train", "test"}
    for split in ("train", "test"):
        assert_rows_match_archive(rows_by_id(ds[split]), sample_archive, split)
    features = ds["train"].features
    assert features["label"].names == label_names("alphabetical")
    assert features["scene"].names == list(SCENES)
    assert features["scenario"].names == list(SCENARIOS)


def test_streaming_and_builder_agree_with_parquet(built_faces, sample_archive, tmp_path):
    parquet = datasets.load_dataset(str(built_faces))
    streamed = datasets.load_dataset(str(built_faces), streaming=True)
    direct = ferv39k_hf.load(sample_archive, config="faces", cache_dir=str(tmp_path / "cache"))
    for split in ("train", "test"):
        expected = rows_by_id(parquet[split])
        stream_rows = {}
        for row in streamed[split].cast_column("frames", UNDECODED_FRAMES):
            stream_rows[row["clip_id"]] = row
        assert stream_rows == expected
        assert rows_by_id(direct[split]) == expected


def test_frames_decode_to_images(built_faces):
    ds = datasets.load_dataset(str(built_faces), split="test")
    row = ds[0]
    assert len(row["frames"]) == row["num_frames"]
    assert row["frames"][0].size == (224, 224)


def test_dfew_order_and_validation_carve_out(sample_archive, tmp_path):
    out = tmp_path / "dfew"
    result = build_dataset_folder(sample_archive, out, label_order="dfew", validation_fraction=0.2, seed=3)
    ds = datasets.load_dataset(str(out))
    assert set(ds) == {"train", "validation", "test"}
    assert ds["train"].features["label"].names == label_names("dfew")
    train_ids = set(ds["train"]["clip_id"])
    val_ids = set(ds["validation"]["clip_id"])
    assert not train_ids & val_ids
    assert train_ids | val_ids == {r.clip_id for r in split_lines(sample_archive, "train")}
    assert result.counts["validation"] == len(val_ids) > 0
    # Stratified: every (scene, class) cell keeps at least one clip in train.
    cells = {(r["scene"], r["label"]) for r in ds["train"].select_columns(["scene", "label"])}
    assert len(cells) == 22 * 7
    assert_rows_match_archive(rows_by_id(ds["test"]), sample_archive, "test", order="dfew")
    card = (out / "README.md").read_text()
    assert "Label order: dfew" in card and "not an official split" in card


def _nest_as_drive_export(src: Path, dst: Path) -> None:
    """An extra FERV39k/ level and the face crops spread over two drive export folders."""
    root = dst / "FERV39k"
    shutil.copytree(src / "4_setups", root / "drive-download-20220301T000000Z-003" / "4_setups")
    scenes = sorted(p.name for p in (src / "2_ClipsforFaceCrop").iterdir())
    for i, scene in enumerate(scenes):
        export = root / f"2_ClipsforFaceCrop-00{1 + i % 2}" / "2_ClipsforFaceCrop" / scene
        shutil.copytree(src / "2_ClipsforFaceCrop" / scene, export)


@pytest.mark.slow  # run by .ci/run's slow step; over 3 s
def test_nested_drive_export_and_zipped_layouts_give_the_same_rows(sample_archive, built_faces, tmp_path):
    expected = datasets.load_dataset(str(built_faces))
    nested = tmp_path / "nested"
    _nest_as_drive_export(sample_archive, nested)
    zipped = tmp_path / "zipped" / "download"
    zipped.mkdir(parents=True)
    with zipfile.ZipFile(zipped / "FERV39k-001.zip", "w") as archive:
        for path in sorted((sample_archive / "2_ClipsforFaceCrop").rglob("*")):
            archive.write(path, "FERV39k/" + str(path.relative_to(sample_archive)))
    with zipfile.ZipFile(zipped / "4_setups.zip", "w") as archive:
        for path in sorted((sample_archive / "4_setups").rglob("*")):
            archive.write(path, str(path.relative_to(sample_archive)))
    for root in (nested, zipped.parent):
        out = tmp_path / f"out-{root.name}"
        build_dataset_folder(root, out)
        got = datasets.load_dataset(str(out))
        for split in ("train", "test"):
            assert rows_by_id(got[split]) == rows_by_id(expected[split]), root


@pytest.mark.slow  # run by .ci/run's slow step; over 3 s
def test_crlf_bom_and_blank_lines_in_split_files(sample_archive, tmp_path, built_faces):
    copy = tmp_path / "crlf"
    shutil.copytree(sample_archive / "4_setups", copy / "4_setups")
    shutil.copytree(sample_archive / "2_ClipsforFaceCrop", copy / "2_ClipsforFaceCrop")
    for split in ("train", "test"):
        path = copy / "4_setups" / "All_scenes" / f"{split}_All.csv"
        lines = path.read_text().splitlines()
        path.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(line + "  " for line in lines).encode() + b"\r\n\r\n")
    out = tmp_path / "out"
    build_dataset_folder(copy, out)
    got = datasets.load_dataset(str(out))
    expected = datasets.load_dataset(str(built_faces))
    for split in ("train", "test"):
        assert rows_by_id(got[split]) == rows_by_id(expected[split])


def _variant_archive(src: Path, dst: Path) -> Path:
    """A copy of the sample with other content: half the test lines, and one clip's frames swapped."""
    shutil.copytree(src / "2_ClipsforFaceCrop", dst / "2_ClipsforFaceCrop")
    shutil.copytree(src / "4_setups", dst / "4_setups")
    test_file = dst / "4_setups" / "All_scenes" / "test_All.csv"
    lines = test_file.read_text().splitlines()
    test_file.write_text("\n".join(lines[: len(lines) // 2]) + "\n")
    first = split_lines(dst, "test")[0]
    frames = sorted((dst / "2_ClipsforFaceCrop" / first.clip_id).glob("*.jpg"))
    frames[0].write_bytes(frames[-1].read_bytes())
    return dst


@pytest.mark.slow  # run by .ci/run's slow step; over 3 s
def test_rebuilt_folder_never_loads_stale_rows(sample_archive, tmp_path):
    """datasets caches a folder with a configs: YAML by name and YAML; new content must mean new YAML."""
    variant = _variant_archive(sample_archive, tmp_path / "variant")
    out = tmp_path / "ferv39k"
    build_dataset_folder(sample_archive, out)
    first = rows_by_id(datasets.load_dataset(str(out), split="test"))
    assert_rows_match_archive(first, sample_archive, "test")
    build_dataset_folder(variant, out, overwrite=True)
    second = rows_by_id(datasets.load_dataset(str(out), split="test"))
    assert first != second
    assert_rows_match_archive(second, variant, "test")
    # Another folder of the same name elsewhere, with other content than the cached one.
    other = tmp_path / "elsewhere" / "ferv39k"
    build_dataset_folder(sample_archive, other)
    assert_rows_match_archive(rows_by_id(datasets.load_dataset(str(other), split="test")), sample_archive, "test")


def test_existing_output_is_refused_without_overwrite(built_faces, sample_archive):
    from ferv39k_hf.errors import BuildError

    with pytest.raises(BuildError, match="--overwrite"):
        build_dataset_folder(sample_archive, built_faces)


def test_card_declares_configs_counts_and_terms(built_faces):
    import yaml

    text = (built_faces / "README.md").read_text()
    front = yaml.safe_load(text.split("---\n")[1])
    config = front["configs"][0]
    assert config["config_name"] == "faces"
    files = {d["split"]: d["path"] for d in config["data_files"]}
    assert set(files) == {"train", "test"}
    for paths in files.values():
        for path in paths:
            assert (built_faces / path).is_file()
    assert front["ferv39k_label_order"] == "alphabetical"
    assert "non-commercial research only" in text and "@inproceedings{wang2022ferv39k" in text
    report = __import__("json").loads((built_faces / "build_report.json").read_text())
    assert report["skipped"] == [] and report["lines"] == sum(report["counts"].values())
    test_total = report["counts"]["test"]
    assert "| test | " in text and f"| {test_total} |" in text
    splits = front["dataset_info"]["splits"]
    assert [(s["name"], s["num_examples"]) for s in splits] == [("train", report["counts"]["train"]),
                                                                ("test", test_total)]
    assert sum(s["num_bytes"] for s in splits) == sum(f.stat().st_size for f in built_faces.glob("data/faces/*"))


def test_card_loading_snippet_runs(built_faces):
    """The card's Python snippet, as written, on the installed datasets release (CI runs the newest and the
    floor, 2.18.0)."""
    text = (built_faces / "README.md").read_text()
    snippet = text.split("```python\n", 1)[1].split("```", 1)[0]
    namespace = {}
    exec(snippet.replace("path/to/this/folder", str(built_faces)), namespace)
    row = namespace["ds"]["train"][0]
    assert row["frames"] and all(isinstance(frame["bytes"], bytes) for frame in row["frames"])


@pytest.mark.parametrize("config", ["scenes", "videos"])
def test_scenes_and_videos_configs(sample_archive, tmp_path, config):
    out = tmp_path / config
    build_dataset_folder(sample_archive, out, config=config)
    ds = datasets.load_dataset(str(out))
    folder = sample_archive / ("3_ClipsforScenImages" if config == "scenes" else "0_7_LabelClips")
    for split in ("train", "test"):
        records = split_lines(sample_archive, split)
        part = ds[split]
        assert sorted(part["clip_id"]) == sorted(r.clip_id for r in records)
        if config == "scenes":
            part = part.cast_column("frames", UNDECODED_FRAMES)
        for row in part.select(range(0, len(part), max(1, len(part) // 15))):
            if config == "scenes":
                files = sorted((folder / row["clip_id"]).glob("*.jpg"))
                assert [f["bytes"] for f in row["frames"]] == [f.read_bytes() for f in files]
                assert row["num_frames"] == len(files)
            else:
                from ferv39k_hf.clips.video import count_frames

                data = (folder / (row["clip_id"] + ".mp4")).read_bytes()
                assert row["video"]["bytes"] == data
                assert row["video"]["path"] == row["clip_id"] + ".mp4"
                assert row["num_frames"] == count_frames(data) > 0
