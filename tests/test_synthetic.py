"""The synthetic sample archive: layout, counts, frames, determinism, zips, CLI, class signal."""

import collections
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ferv39k_hf import cli, synthetic
from ferv39k_hf.archive.annotations import parse_split_text
from ferv39k_hf.errors import BuildError
from ferv39k_hf.synthetic import (
    DEFAULT_SCALE,
    cell_counts,
    frame_counts,
    plan_sample,
    restrict_to_scenes,
    write_sample_archive,
)
from ferv39k_hf.taxonomy import CLASS_WORDS, FRAMES_PER_CLIP, PART_FOLDERS, SCENES, official_counts

FACES, SCENE_FRAMES, VIDEOS = (PART_FOLDERS[k] for k in ("faces", "scenes", "videos"))
# Two scenes at opposite ends of SCENES, so a zip test spans several zips of a part.
SMALL_SCENES = ("Action", "Social")


def _files(root: Path):
    """The archive's files (its marker, which records the settings, left out)."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != synthetic.SAMPLE_MARKER}


def _split_records(root: Path, split: str):
    name = {"train": "train_All.csv", "test": "test_All.csv"}[split]
    text = (root / "4_setups" / "All_scenes" / name).read_bytes().decode("utf-8")
    records, problems = parse_split_text(text, split=split, source=name)
    assert problems == []
    return text, records


@pytest.fixture(scope="module")
def default_plan():
    return plan_sample()


@pytest.fixture(scope="module")
def small_archive(tmp_path_factory):
    """Two scenes' clips of the default archive (seed 0), all parts, unpacked."""
    root = tmp_path_factory.mktemp("small") / "FERV39k"
    write_sample_archive(root, scenes=SMALL_SCENES, workers=1)
    return root


# -- planning (pure, fast) ---------------------------------------------------------------------


def test_default_plan_has_every_cell_and_a_few_hundred_clips(default_plan):
    cells = collections.Counter((c.split, c.scene, c.emotion) for c in default_plan.clips)
    assert set(cells) == {(s, scene, w) for s in ("train", "test") for scene in SCENES for w in CLASS_WORDS}
    assert min(cells.values()) >= 1
    assert 300 <= len(default_plan.clips) <= 800
    assert cells == collections.Counter(cell_counts(DEFAULT_SCALE))


@pytest.mark.parametrize("scale", [0.003, 0.05, 0.2])
def test_cell_counts_follow_the_official_table(scale):
    plan = plan_sample(scale, seed=3)
    cells = collections.Counter((c.split, c.scene, c.emotion) for c in plan.clips)
    for split in ("train", "test"):
        for (scene, word), n in official_counts(split).items():
            assert cells[split, scene, word] == max(1, round(scale * n)), (split, scene, word)


def test_full_scale_reproduces_official_counts_and_frame_histogram():
    plan = plan_sample(1.0, seed=0)
    cells = collections.Counter((c.split, c.scene, c.emotion) for c in plan.clips)
    for split in ("train", "test"):
        assert {k[1:]: v for k, v in cells.items() if k[0] == split} == official_counts(split)
    assert dict(collections.Counter(c.num_frames for c in plan.clips)) == dict(FRAMES_PER_CLIP)


def test_frame_counts_stay_in_range_and_near_the_official_median():
    counts = frame_counts(500, np.random.default_rng(0))
    assert counts.min() >= 8 and counts.max() <= 47
    assert 26 <= np.median(counts) <= 30
    assert 0.05 <= np.mean(counts < 16) <= 0.15  # about 10% of real clips are shorter than 16 frames


def test_numbering_is_dense_per_folder_and_splits_are_disjoint(default_plan):
    by_folder = collections.defaultdict(list)
    for clip in default_plan.clips:
        folder, number = clip.clip_id.rsplit("/", 1)
        assert len(number) == 4
        by_folder[folder].append(int(number))
    for folder, numbers in by_folder.items():
        assert sorted(numbers) == list(range(len(numbers))), folder
    train = {c.clip_id for c in default_plan.clips if c.split == "train"}
    test = {c.clip_id for c in default_plan.clips if c.split == "test"}
    assert train and test and not train & test
    assert len(train) + len(test) == len(default_plan.clips)


def test_split_lines_list_every_clip_once_grouped_by_scene(default_plan):
    for split, lines in default_plan.split_lines.items():
        records, problems = parse_split_text("\n".join(lines), split=split, source=split)
        assert problems == []
        assert sorted(r.clip_id for r in records) == sorted(c.clip_id for c in default_plan.clips if c.split == split)
        scenes = [r.scene for r in records]
        assert scenes == sorted(scenes)  # grouped by scene, in scene order


def test_plans_depend_on_the_seed_only():
    assert plan_sample(seed=5) == plan_sample(seed=5)
    a, b = plan_sample(seed=5), plan_sample(seed=6)
    assert [c.clip_id for c in a.clips] == [c.clip_id for c in b.clips]  # same folders and counts
    assert a.split_lines != b.split_lines or [c.num_frames for c in a.clips] != [c.num_frames for c in b.clips]


@pytest.mark.parametrize("kwargs", [{"scale": 0.0}, {"scale": 1.5}, {"seed": -1}])
def test_bad_scale_or_seed_is_refused(kwargs):
    with pytest.raises(BuildError):
        plan_sample(**kwargs)


def test_unknown_scene_or_part_is_refused(default_plan, tmp_path):
    with pytest.raises(BuildError, match="Atlantis"):
        restrict_to_scenes(default_plan, ["Atlantis"])
    with pytest.raises(BuildError, match="parts"):
        write_sample_archive(tmp_path / "x", parts=("faces", "audio"))


# -- the written archive ------------------------------------------------------------------------


def test_layout_folders_and_split_files(sample_archive):
    for folder in (FACES, SCENE_FRAMES, VIDEOS, "4_setups/All_scenes", "4_setups/22_scenes"):
        assert (sample_archive / folder).is_dir(), folder
    for part in (FACES, SCENE_FRAMES, VIDEOS):
        assert sorted(p.name for p in (sample_archive / part).iterdir()) == sorted(SCENES)
    for split in ("train", "test"):
        text, records = _split_records(sample_archive, split)
        assert text.endswith("\n") and "\r" not in text and text.count("\n") == len(records)
        for scene in SCENES:
            scene_file = sample_archive / "4_setups" / "22_scenes" / f"{split}_{scene}.csv"
            lines = [ln + "\n" for ln in text.splitlines() if ln.startswith(scene + "/")]
            assert scene_file.read_text() == "".join(lines)


def test_every_listed_clip_has_its_frames_and_video(sample_archive, default_plan):
    planned = {c.clip_id: c for c in default_plan.clips}
    listed = [r for split in ("train", "test") for r in _split_records(sample_archive, split)[1]]
    assert sorted(r.clip_id for r in listed) == sorted(planned)
    sizes = []
    for record in listed:
        frames = sorted((sample_archive / FACES / record.clip_id).glob("*.jpg"))
        n = planned[record.clip_id].num_frames
        assert 8 <= len(frames) <= 47 and len(frames) == n
        assert [f.name for f in frames] == [f"{i:02d}.jpg" for i in range(n)]
        assert len(list((sample_archive / SCENE_FRAMES / record.clip_id).glob("*.jpg"))) == n
        assert (sample_archive / VIDEOS / f"{record.clip_id}.mp4").is_file()
        sizes += [f.stat().st_size for f in frames]
    assert 5_000 <= np.mean(sizes) <= 15_000
    # No folder or file that the split files do not list.
    on_disk = {p.relative_to(sample_archive / FACES).as_posix() for p in (sample_archive / FACES).glob("*/*/*")}
    assert on_disk == set(planned)


def test_frames_decode_at_the_archive_sizes(sample_archive, default_plan):
    for clip in default_plan.clips[::25]:
        for folder, size in ((FACES, (224, 224)), (SCENE_FRAMES, (320, 240))):
            for frame in sorted((sample_archive / folder / clip.clip_id).glob("*.jpg"))[::7]:
                with Image.open(frame) as image:
                    assert image.format == "JPEG" and image.size == size
                    image.load()


def test_videos_hold_as_many_frames_as_the_face_crops(sample_archive, default_plan):
    av = pytest.importorskip("av")
    for clip in default_plan.clips[::60]:
        with av.open(str(sample_archive / VIDEOS / f"{clip.clip_id}.mp4")) as container:
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        assert len(frames) == clip.num_frames
        assert frames[0].shape == (240, 320, 3)


def test_a_scene_subset_is_byte_identical_to_the_full_archive(sample_archive, small_archive):
    small = _files(small_archive)
    media = {k: v for k, v in small.items() if not k.startswith("4_setups/")}
    assert media and {k.split("/")[1] for k in media} == set(SMALL_SCENES)
    for name, data in media.items():
        assert (sample_archive / name).read_bytes() == data, name
    for scene in SMALL_SCENES:
        for split in ("train", "test"):
            name = f"4_setups/22_scenes/{split}_{scene}.csv"
            assert small[name] == (sample_archive / name).read_bytes()


def test_same_seed_same_bytes_other_seed_other_bytes(small_archive, tmp_path):
    again = tmp_path / "again"
    write_sample_archive(again, scenes=SMALL_SCENES, parts=("faces", "videos"), workers=2)
    files = _files(again)
    reference = _files(small_archive)
    assert files == {k: v for k, v in reference.items() if not k.startswith(SCENE_FRAMES)}
    other = tmp_path / "other"
    write_sample_archive(other, scenes=["Social"], parts=("faces",), seed=1, workers=1)
    other_files = _files(other)
    shared = [k for k in other_files if k in reference and k.endswith(".jpg")]
    assert shared and all(other_files[k] != reference[k] for k in shared)


@pytest.mark.slow  # run by .ci/run's slow step; over 3 s
def test_zip_members_reproduce_the_unpacked_archive(small_archive, tmp_path):
    parts = ("faces", "videos")  # scene frames pack the same way; leaving them out keeps this quick
    zipped = tmp_path / "download"
    summary = write_sample_archive(zipped, scenes=SMALL_SCENES, parts=parts, zip=True, workers=1)
    assert summary.zipped
    zips = sorted(zipped.rglob("*.zip"))
    export = synthetic.DRIVE_EXPORT
    assert [z.relative_to(zipped).as_posix() for z in zips] == [
        f"{export}-001/{VIDEOS}-001.zip",  # Action
        f"{export}-001/{FACES}-001.zip",
        f"{export}-001/4_setups.zip",
        f"{export}-002/{VIDEOS}-002.zip",  # Social
        f"{export}-003/{FACES}-003.zip",
    ]
    members = {}
    for path in zips:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
            assert [i.filename for i in infos] == sorted(i.filename for i in infos)
            for info in infos:
                assert info.date_time == synthetic.ZIP_DATE_TIME
                expected = zipfile.ZIP_DEFLATED if info.filename.endswith(".csv") else zipfile.ZIP_STORED
                assert info.compress_type == expected
                assert info.filename not in members
                members[info.filename] = archive.read(info)
    unpacked = {k: v for k, v in _files(small_archive).items() if not k.startswith(SCENE_FRAMES)}
    assert members == unpacked
    again = tmp_path / "again"
    write_sample_archive(again, scenes=SMALL_SCENES, parts=parts, zip=True, workers=1)
    assert _files(again) == _files(zipped)  # the zip files themselves are byte-identical


def test_refuses_a_non_empty_folder(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(BuildError, match="not empty"):
        write_sample_archive(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_summary_counts_what_was_written(small_archive, tmp_path):
    summary = write_sample_archive(tmp_path / "s", scenes=["Experiment"], parts=("faces",), workers=1)
    plan = restrict_to_scenes(plan_sample(), ["Experiment"])
    files = [p for p in summary.root.rglob("*") if p.is_file() and p.name != synthetic.SAMPLE_MARKER]
    assert summary.clips == {s: sum(c.split == s for c in plan.clips) for s in ("train", "test")}
    assert summary.frames == sum(c.num_frames for c in plan.clips)
    assert summary.files == len(files) == summary.frames + 2 + 2  # frames, All_scenes, one scene's files
    assert summary.bytes == sum(p.stat().st_size for p in files)


def test_cli_sample_writes_and_reports(monkeypatch, tmp_path, capsys):
    # The CLI path end to end, on one scene so that it takes a second.
    full_plan = synthetic.plan_sample
    monkeypatch.setattr(synthetic, "plan_sample", lambda scale, seed: restrict_to_scenes(full_plan(scale, seed),
                                                                                         ["Experiment"]))
    out = tmp_path / "demo"
    assert cli.main(["sample", str(out), "--seed", "2", "--parts", "faces,videos", "--zip"]) == 0
    printed = capsys.readouterr().out
    assert str(out) in printed and "train" in printed and "MB" in printed
    assert sorted(p.name for p in out.rglob("*.zip")) == ["0_7_LabelClips-001.zip", "2_ClipsforFaceCrop-002.zip",
                                                          "4_setups.zip"]
    assert cli.main(["sample", str(out)]) == 1  # a sample, but of other settings: not written over
    assert "already holds a sample archive made with other settings" in capsys.readouterr().err
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    assert cli.main(["sample", str(out), "--seed", "2", "--parts", "faces,videos", "--zip"]) == 0  # the same: reused
    assert "already holds this synthetic sample archive" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before  # nothing written


def test_the_sample_is_marked_and_a_second_run_reuses_only_its_own_finished_folder(tmp_path, capsys):
    out = tmp_path / "demo"
    summary = write_sample_archive(out, scenes=["Experiment"], parts=("faces",), workers=1)
    marker = synthetic.read_sample_marker(out)
    assert marker["complete"] and marker["synthetic"] and marker["settings"]["parts"] == ["faces"]
    assert synthetic.is_sample_archive(out) and not synthetic.is_sample_archive(tmp_path)
    again = write_sample_archive(out, scenes=["Experiment"], parts=("faces",), workers=1)
    assert again.reused and not summary.reused and _files(out) and again.files == summary.files
    # a marker that says unfinished (the run stopped): refused, never completed or written over
    text = (out / synthetic.SAMPLE_MARKER).read_text()
    (out / synthetic.SAMPLE_MARKER).write_text(text.replace('"complete": true', '"complete": false'))
    with pytest.raises(BuildError, match="unfinished sample archive"):
        write_sample_archive(out, scenes=["Experiment"], parts=("faces",), workers=1)
    # someone else's marker-like file is not ours: the folder is simply not empty
    (out / synthetic.SAMPLE_MARKER).write_text('{"made_by": "someone else", "complete": true}')
    with pytest.raises(BuildError, match="not empty"):
        write_sample_archive(out, scenes=["Experiment"], parts=("faces",), workers=1)


def test_verify_calls_the_sample_synthetic_in_one_line(tmp_path, capsys):
    out = tmp_path / "demo"
    write_sample_archive(out, scenes=["Experiment", "War"], parts=("faces",), workers=1)
    assert cli.main(["verify", str(out)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("synthetic sample (made by 'ferv39k-hf sample', no FERV39k data): ")
    assert "clips per scene and class" not in "\n".join(printed) and len(printed) == 3
    assert cli.main(["verify", str(out), "--official", "yes"]) == 1  # asked for: the tables and the differences
    assert "clips per scene and class" in capsys.readouterr().out
    (out / synthetic.SAMPLE_MARKER).unlink()  # an unmarked small archive still gets its table
    assert cli.main(["verify", str(out)]) == 0 and "clips per scene and class" in capsys.readouterr().out


# -- the class signal ---------------------------------------------------------------------------


def _clip_features(root: Path, split: str):
    """Per clip: the mean of 4 frames, grey, 28x28, centre half, zero-mean unit-norm."""
    features, labels = [], []
    for record in _split_records(root, split)[1]:
        frames = sorted((root / FACES / record.clip_id).glob("*.jpg"))
        pixels = []
        for frame in frames[:: max(1, len(frames) // 4)][:4]:
            with Image.open(frame) as image:
                image.draft("L", (56, 56))  # decode at reduced size: fast
                pixels.append(np.asarray(image.convert("L").resize((28, 28)), np.float32)[7:21, 7:21])
        x = np.mean(pixels, axis=0).ravel()
        x -= x.mean()
        features.append(x / np.linalg.norm(x))
        labels.append(CLASS_WORDS.index(record.emotion))
    return np.stack(features), np.array(labels)


def test_expressions_carry_a_learnable_class_signal(sample_archive):
    x_train, y_train = _clip_features(sample_archive, "train")
    x_test, y_test = _clip_features(sample_archive, "test")
    means = np.stack([x_train[y_train == k].mean(axis=0) for k in range(len(CLASS_WORDS))])
    predicted = ((x_test[:, None, :] - means[None]) ** 2).sum(-1).argmin(1)
    accuracy = (predicted == y_test).mean()
    recall = [(predicted[y_test == k] == k).mean() for k in range(len(CLASS_WORDS))]
    # Chance is 1/7 (0.14). A nearest-class-mean on raw pixels is a weak learner,
    # so clearing 0.4 means the drawings differ by class well beyond noise.
    assert accuracy >= 0.4 and np.mean(recall) >= 0.4, (accuracy, recall)
    assert min(recall) > 0.0


def test_frames_of_a_clip_move_and_differ(small_archive):
    clip = sorted((small_archive / FACES / "Social" / "Happy").iterdir())[0]
    frames = [np.asarray(Image.open(f), np.int16) for f in sorted(clip.glob("*.jpg"))[:6]]
    for a, b in zip(frames, frames[1:]):
        assert np.abs(a - b).mean() > 0.5  # noise and motion change every frame
    assert len({f.tobytes() for f in frames}) == len(frames)
