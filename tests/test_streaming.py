"""Streaming a built folder (ferv39k_hf.dataset.streaming) and `run_video_classification.py --streaming true`:
the same rows as the map-style dataset, whole shares per rank, no Arrow cache, every test clip scored once
(in one process, under torchrun with 2 CPU processes, and from s3:// on a local moto S3 server)."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ferv39k_hf.dataset import streaming
from ferv39k_hf.training import streamloader

torch = pytest.importorskip("torch")
datasets = pytest.importorskip("datasets")

from localnet import start_s3_server  # noqa: E402
from test_training import EXAMPLES, _check_results, _common, run_script, tiny_checkpoints  # noqa: E402,F401


def _map_split(built, split):
    from ferv39k_hf import undecoded_frames

    return undecoded_frames(datasets.load_dataset(str(built), split=split))


def _arrow_files(folder: Path):
    return sorted(str(p) for p in folder.rglob("*.arrow"))


def _scored_clips(out: Path):
    with open(out / "eval_predictions.csv", newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_streamed_rows_are_the_map_style_rows(built_faces):
    for split in ("train", "test"):
        mapped = _map_split(built_faces, split)
        rows = list(streaming.stream(built_faces, split))
        assert [r["clip_id"] for r in rows] == mapped["clip_id"]
        for index in (0, len(rows) // 2, len(rows) - 1):
            assert rows[index] == mapped[index]  # labels, scene, scenario and every frame's JPEG bytes
        assert isinstance(rows[0]["frames"][0]["bytes"], bytes)  # undecoded: the transform decodes what it samples

    ids = set(_map_split(built_faces, "train")["clip_id"])
    for world in (2, 3):
        shares = [[r["clip_id"] for r in streaming.stream(built_faces, "train", rank=k, world_size=world)]
                  for k in range(world)]
        assert sum(map(len, shares)) == len(ids) and set().union(*shares) == ids  # disjoint and complete
    shuffled = streaming.stream(built_faces, "train", shuffle_buffer=64, seed=3)
    first = [r["clip_id"] for r in shuffled]
    shuffled.set_epoch(1)
    second = [r["clip_id"] for r in shuffled]
    assert sorted(first) == sorted(second) == sorted(ids) and first != second
    assert [r["clip_id"] for r in streaming.stream(built_faces, "train", shuffle_buffer=64, seed=3)] == first


def test_card_row_counts_locations_and_errors(built_faces, tmp_path, monkeypatch):
    card = streaming.read_card(built_faces)
    counts = streaming.card_row_counts(card)
    assert counts == {split: _map_split(built_faces, split).num_rows for split in ("train", "test")}
    assert streamloader.steps_per_epoch(31088, 8, 16) == 242 and streamloader.steps_per_epoch(3, 4, 8) == 1
    with pytest.raises(streaming.StreamError, match=str(tmp_path / "README.md")):
        streaming.read_card(tmp_path)
    with pytest.raises(streaming.StreamError, match="no split 'validation'"):
        streaming.stream(built_faces, "validation")

    for url in ("s3://bucket/ferv39k", "gs://bucket/x", "hf://datasets/org/ferv39k"):
        assert streaming.is_remote(url)
        # the URL goes to fsspec as given: only the card's relative paths are appended
        assert streaming.split_files(card, url)["test"][0].startswith(url + "/data/")
    assert not any(streaming.is_remote(p) for p in ("/data/ferv39k", "ferv39k", "file:///data/x", r"C:\data"))
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    assert streaming.storage_options_for("s3://b/x") == {"client_kwargs": {"endpoint_url": "http://127.0.0.1:9"}}
    assert streaming.storage_options_for("gs://b/x") == {} and streaming.storage_options_for(str(built_faces)) == {}
    assert streaming.storage_options_for("s3://b/x", {"endpoint_url": "http://e"}) == {"endpoint_url": "http://e"}


def test_example_refuses_a_url_without_streaming_and_streaming_without_a_built_folder(run_script):
    with pytest.raises(ValueError, match="--streaming true"):
        run_script.DataTrainingArguments(dataset_dir="s3://bucket/ferv39k")
    with pytest.raises(ValueError, match="--dataset_dir"):
        run_script.DataTrainingArguments(archive_dir="FERV39k", streaming=True)


def test_example_refuses_streamed_training_with_a_batch_size_it_would_change(run_script, built_faces, tmp_path):
    with pytest.raises(ValueError, match="--auto_find_batch_size"):
        run_script.main(["--model_name_or_path", "unused", "--dataset_dir", str(built_faces), "--streaming", "true",
                         "--do_train", "--auto_find_batch_size", *_common(tmp_path / "out")])


def test_streaming_trains_without_arrow_cache_and_scores_like_the_map_style_run(
        run_script, tiny_checkpoints, built_faces, tmp_path, monkeypatch):
    test_ids = _map_split(built_faces, "test")["clip_id"]
    cache = tmp_path / "hf-datasets-cache"
    monkeypatch.setenv("HF_DATASETS_CACHE", str(cache))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    trained = tmp_path / "trained"
    # no --max_steps: 2 epochs over 8 clips in batches of 4 -> 4 steps, from the card's row counts
    run_script.main(["--model_name_or_path", str(tiny_checkpoints["videomae"]), "--dataset_dir", str(built_faces),
                     "--streaming", "true", "--do_train", "--do_eval", "--max_train_samples", "8",
                     "--num_train_epochs", "2", "--test_views", "2x2", *_common(trained)])
    assert json.loads((trained / "trainer_state.json").read_text())["global_step"] == 4
    _check_results(trained, len(test_ids))
    assert sorted(row["clip_id"] for row in _scored_clips(trained)) == sorted(test_ids)
    reports = {}
    for mode in ("true", "false"):
        out = tmp_path / f"eval-streaming-{mode}"
        run_script.main(["--model_name_or_path", str(trained), "--dataset_dir", str(built_faces), "--do_eval",
                         "--streaming", mode, "--test_views", "2x2", *_common(out)])
        reports[mode] = _check_results(out, len(test_ids))[1]
        if mode == "true":
            assert _arrow_files(cache) == [], "streaming wrote an Arrow cache"
    assert _arrow_files(cache), "the map-style run writes its Arrow cache there (so the check above can fail)"
    assert reports["true"]["confusion_matrix"] == reports["false"]["confusion_matrix"]
    assert reports["true"]["per_scene"] == reports["false"]["per_scene"]


@pytest.mark.slow  # ~25 s idle, ~55 s on a shared 2-core machine: two processes start torch and transformers
def test_torchrun_two_processes_streaming_score_every_test_clip_once(tiny_checkpoints, built_faces, tmp_path):
    out, cache = tmp_path / "ddp", tmp_path / "hf-datasets-cache"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_DATASETS_CACHE": str(cache),
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(EXAMPLES / "run_video_classification.py"), "--model_name_or_path",
               str(tiny_checkpoints["videomae"]), "--dataset_dir", str(built_faces), "--streaming", "true",
               "--do_train", "--do_eval", "--max_steps", "2", "--test_views", "2x1", "--ddp_backend", "gloo",
               *_common(out)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    test_ids = _map_split(built_faces, "test")["clip_id"]
    _check_results(out, len(test_ids))
    scored = _scored_clips(out)
    assert sorted(row["clip_id"] for row in scored) == sorted(test_ids)  # each once, none twice
    by_rank = {rank: sum(row["rank"] == rank for row in scored) for rank in ("0", "1")}
    assert set(by_rank) == {row["rank"] for row in scored} and min(by_rank.values()) >= len(test_ids) // 2
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 2
    assert _arrow_files(cache) == [], "streaming wrote an Arrow cache"



@pytest.mark.slow  # two processes start torch and transformers, as above
def test_torchrun_streaming_eval_with_a_rank_holding_no_clip(tiny_checkpoints, built_faces, tmp_path):
    """--max_eval_samples 1: rank 1's share is empty, so it steps through lockstep's filler (the example's batch
    of zeros) while rank 0 scores the clip; the one clip is scored once, by rank 0, and both ranks finish."""
    out = tmp_path / "uneven"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(EXAMPLES / "run_video_classification.py"), "--model_name_or_path",
               str(tiny_checkpoints["videomae"]), "--dataset_dir", str(built_faces), "--streaming", "true",
               "--do_eval", "--max_eval_samples", "1", "--test_views", "2x1", "--ddp_backend", "gloo",
               *_common(out)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    scored = _scored_clips(out)
    assert [row["rank"] for row in scored] == ["0"], scored
    assert scored[0]["clip_id"] == _map_split(built_faces, "test")["clip_id"][0]
    assert json.loads((out / "eval_per_scene.json").read_text())["num_clips"] == 1

@pytest.fixture
def s3_server(monkeypatch):
    """A real S3 API (moto's server) on a free port of 127.0.0.1, with the AWS variables pointing at it."""
    server, port = start_s3_server()
    endpoint = f"http://127.0.0.1:{port}"
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    try:
        yield endpoint
    finally:
        server.stop()


@pytest.mark.slow  # run by .ci/run's slow step; over 3 s
def test_streams_and_trains_from_s3(s3_server, run_script, tiny_checkpoints, built_faces, tmp_path):
    import s3fs

    client = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_server})
    client.mkdir("ferv39k-bucket")
    client.put(f"{built_faces}/", "ferv39k-bucket/ferv39k/", recursive=True)
    url = "s3://ferv39k-bucket/ferv39k"
    assert streaming.card_row_counts(streaming.read_card(url)) == streaming.card_row_counts(
        streaming.read_card(built_faces))
    remote = list(streaming.stream(url, "test", rank=1, world_size=2))
    local = list(streaming.stream(built_faces, "test", rank=1, world_size=2))
    assert [r["clip_id"] for r in remote] == [r["clip_id"] for r in local] and remote[0] == local[0]

    out = tmp_path / "from-s3"
    run_script.main(["--model_name_or_path", str(tiny_checkpoints["videomae"]), "--dataset_dir", url,
                     "--streaming", "true", "--do_train", "--do_eval", "--max_steps", "1", *_common(out)])
    results, _ = _check_results(out, len(_map_split(built_faces, "test")))
    assert results["train_loss"] > 0


def test_one_split_to_files_rule_for_streaming_and_scoring():
    """The default config's files; else the only config's; else an error naming the configs (dataset.card)."""
    from ferv39k_hf.dataset import card

    faces = {"config_name": "faces", "data_files": [{"split": "test", "path": ["data/faces/t.parquet"]}]}
    scenes = {"config_name": "scenes", "data_files": [{"split": "test", "path": "data/scenes/t.parquet"}]}
    assert card.split_files({"configs": [faces]}, "/x")["test"] == [os.path.join("/x", "data/faces/t.parquet")]
    assert card.split_files({"configs": [faces, {**scenes, "default": True}]}, "s3://b/x/") == {
        "test": ["s3://b/x/data/scenes/t.parquet"]}
    with pytest.raises(streaming.StreamError, match=r"README.md: 2 configs \(faces, scenes\) and none marked default"):
        card.split_files({"configs": [faces, scenes]}, "/x")
    with pytest.raises(streaming.StreamError, match="no 'configs'"):
        card.split_files({}, "/x")
    info = {"dataset_info": [{"config_name": "faces", "splits": [{"name": "test", "num_examples": 3}]},
                             {"config_name": "scenes", "splits": [{"name": "test", "num_examples": 5}]}]}
    assert card.card_row_counts({"configs": [faces, {**scenes, "default": True}], **info}) == {"test": 5}
