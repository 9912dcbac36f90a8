"""examples/run_video_classification.py and examples/predict.py end to end, on the built sample (each example's
``main`` run through runpy: the pieces it uses are ferv39k_hf.training's, tested through the package).

Tiny random VideoMAE and TimeSformer checkpoints (hidden size 32, 2 layers,
32x32 input, 4 frames) stand in for the Hub's, each saved with an image
processor config whose mean, std and size the script must pick up.
"""

import collections
import csv
import json
import os
import runpy
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from hubstub import HubStub

from ferv39k_hf.taxonomy import CLASS_WORDS, DFEW_ORDER, SCENARIOS, SCENES

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
TINY_MEAN, TINY_STD = [0.45, 0.45, 0.45], [0.225, 0.225, 0.225]
TINY = {
    "videomae": "hidden_size=32,num_hidden_layers=2,num_attention_heads=4,intermediate_size=64,"
                "image_size=32,num_frames=4,patch_size=16,tubelet_size=2",
    "timesformer": "hidden_size=32,num_hidden_layers=2,num_attention_heads=4,intermediate_size=64,"
                   "image_size=32,num_frames=4,patch_size=16",
}
# Small enough to train from scratch on 2 CPU cores in a few minutes; see examples/README.md.
FROM_SCRATCH = [
    "--model_type", "videomae",
    "--config_overrides", "hidden_size=64,num_hidden_layers=4,num_attention_heads=4,intermediate_size=128,"
                          "image_size=32,num_frames=4,patch_size=4,tubelet_size=2",
    "--num_train_epochs", "80", "--learning_rate", "2e-3", "--warmup_steps", "0.1", "--weight_decay", "0.05",
    "--per_device_train_batch_size", "16", "--per_device_eval_batch_size", "32", "--test_views", "2x2",
]


def _example(name):
    """The example's names (``main``, its argument dataclasses) as runpy gives them, without running ``main``."""
    return SimpleNamespace(**runpy.run_path(str(EXAMPLES / f"{name}.py")))


@pytest.fixture(scope="module")
def run_script():
    return _example("run_video_classification")


@pytest.fixture(scope="module")
def predict_script():
    return _example("predict")


@pytest.fixture(scope="module")
def tiny_checkpoints(tmp_path_factory):
    """Random tiny checkpoints saved the way the Hub's are: config, weights, preprocessor_config.json."""
    from transformers import AutoConfig, AutoModelForVideoClassification

    try:
        from transformers import VideoMAEImageProcessorPil as Processor  # transformers 5
    except ImportError:  # transformers 4
        from transformers import VideoMAEImageProcessor as Processor

    torch.manual_seed(0)
    folders = {}
    for model_type, overrides in TINY.items():
        folder = tmp_path_factory.mktemp(f"tiny-{model_type}")
        config = AutoConfig.for_model(model_type, num_labels=400)  # a Kinetics-sized head to be replaced
        config.update_from_string(overrides)
        AutoModelForVideoClassification.from_config(config).save_pretrained(folder)
        Processor(image_mean=TINY_MEAN, image_std=TINY_STD, size={"shortest_edge": 32},
                  crop_size={"height": 32, "width": 32}).save_pretrained(folder)
        folders[model_type] = folder
    return folders


def _common(out, *extra):
    return ["--output_dir", str(out), "--report_to", "none", "--save_strategy", "no", "--use_cpu",
            "--disable_tqdm", "true", "--seed", "0", "--per_device_train_batch_size", "4",
            "--per_device_eval_batch_size", "32", *extra]


def _test_size(built):
    import datasets

    return datasets.load_dataset(str(built), split="test").num_rows


def _check_results(out, num_test_clips):
    results = json.loads((out / "all_results.json").read_text())
    report = json.loads((out / "eval_per_scene.json").read_text())
    assert 0 <= results["eval_war"] <= 1 and 0 <= results["eval_uar"] <= 1
    assert report["num_clips"] == num_test_clips == sum(report["support"].values())
    cm = report["confusion_matrix"]
    assert results["eval_war"] == pytest.approx(sum(cm[i][i] for i in range(7)) / num_test_clips)
    assert set(report["per_scene"]) <= set(SCENES) and set(report["per_scenario"]) == set(SCENARIOS)
    assert sum(s["support"] for s in report["per_scene"].values()) == num_test_clips
    return results, report


@pytest.mark.parametrize("model_type", ["videomae", "timesformer"])
def test_finetune_evaluate_reload_and_predict(model_type, run_script, predict_script, tiny_checkpoints,
                                              built_faces, sample_archive, tmp_path, capsys):
    from transformers import AutoConfig, AutoModelForVideoClassification

    out = tmp_path / "out"
    views = "2x2" if model_type == "videomae" else "1x1"
    run_script.main(["--model_name_or_path", str(tiny_checkpoints[model_type]), "--dataset_dir", str(built_faces),
                     "--do_train", "--do_eval", "--max_steps", "2", "--test_views", views, *_common(out)])
    results, report = _check_results(out, _test_size(built_faces))
    assert "train_loss" in results

    config = AutoConfig.from_pretrained(out)
    assert config.id2label == dict(enumerate(CLASS_WORDS)) and config.label2id["Surprise"] == 6
    protocol = config.ferv39k
    assert (protocol["mean"], protocol["std"], protocol["image_size"]) == (TINY_MEAN, TINY_STD, 32)
    assert (protocol["num_frames"], protocol["test_views"], protocol["sampling"]) == (4, views, "segment")
    model = AutoModelForVideoClassification.from_pretrained(out)
    assert model.config.num_labels == 7
    with torch.no_grad():
        assert model(pixel_values=torch.zeros(1, 4, 3, 32, 32)).logits.shape == (1, 7)
    processor = json.loads((out / "preprocessor_config.json").read_text())
    assert processor["image_mean"] == TINY_MEAN and processor["crop_size"] == {"height": 32, "width": 32}
    video_processor = json.loads((out / "video_preprocessor_config.json").read_text())
    assert processor["ferv39k"] == video_processor["ferv39k"] == protocol
    assert (video_processor["num_frames"], video_processor["image_mean"], video_processor["image_std"]) == \
        (4, TINY_MEAN, TINY_STD)
    assert video_processor["video_processor_type"] == {"videomae": "VideoMAEVideoProcessor",
                                                       "timesformer": "TimesformerVideoProcessor"}[model_type]
    card = (out / "README.md").read_text()
    assert "model-index" in card and "| 6 | Surprise |" in card and f"{views} views" in card

    capsys.readouterr()
    faces = sample_archive / "2_ClipsforFaceCrop"
    clip = next(p for p in sorted(faces.glob("*/*/*")) if p.is_dir())
    video = next(iter(sorted((sample_archive / "0_7_LabelClips").glob("*/*/*.mp4"))))
    assert predict_script.main([str(out), str(clip), str(video), "--top_k", "3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith(str(clip)) and lines[1].startswith(str(video))
    for line in lines:
        ranked = line.rsplit(": ", 1)[1].split(", ")
        assert len(ranked) == 3 and all(r.split()[0] in CLASS_WORDS for r in ranked)
        assert sum(float(r.split()[1]) for r in ranked) <= 1.0 + 1e-6


def test_sampling_preset_sets_size_and_test_views(run_script, tiny_checkpoints, built_faces, tmp_path):
    """--sampling mae-dfer, without --image_size or --test_views: its 160 pixels and 2x2 views, recorded."""
    from transformers import AutoConfig

    out = tmp_path / "out"
    run_script.main(["--model_name_or_path", str(tiny_checkpoints["videomae"]), "--dataset_dir", str(built_faces),
                     "--sampling", "mae-dfer", "--do_train", "--do_eval", "--max_steps", "1",
                     "--max_eval_samples", "8", *_common(out)])
    assert 0 <= json.loads((out / "all_results.json").read_text())["eval_war"] <= 1
    protocol = AutoConfig.from_pretrained(out).ferv39k
    assert (protocol["sampling"], protocol["image_size"], protocol["test_views"]) == ("mae-dfer", 160, "2x2")
    with pytest.raises(ValueError, match="--sampling must be one of"):
        run_script.main(["--model_name_or_path", str(tiny_checkpoints["videomae"]), "--dataset_dir",
                         str(built_faces), "--sampling", "dfer", *_common(tmp_path / "bad")])


def test_finish_on_device_trains_and_scores_like_the_cpu_path(run_script, tiny_checkpoints, built_faces, tmp_path):
    """--finish_on_device: uint8 batches finished in the model's forward; the test scores match the CPU path's
    (the inputs differ by at most one grey level of resize rounding)."""
    checkpoint = str(tiny_checkpoints["videomae"])
    trained = tmp_path / "trained"
    run_script.main(["--model_name_or_path", checkpoint, "--dataset_dir", str(built_faces), "--do_train",
                     "--do_eval", "--max_steps", "2", "--test_views", "2x2", "--finish_on_device", "true",
                     *_common(trained)])
    results, _ = _check_results(trained, _test_size(built_faces))
    assert results["train_loss"] > 0
    reports = {}
    for on_device in ("true", "false"):
        out = tmp_path / f"eval-{on_device}"
        run_script.main(["--model_name_or_path", str(trained), "--dataset_dir", str(built_faces), "--do_eval",
                         "--test_views", "2x2", "--finish_on_device", on_device, *_common(out)])
        reports[on_device] = _check_results(out, _test_size(built_faces))[1]
    assert reports["true"]["confusion_matrix"] == reports["false"]["confusion_matrix"]


@pytest.mark.parametrize("on_device", ["false", "true"])
def test_dataloader_workers_feed_training_and_score_like_the_main_process(run_script, tiny_checkpoints, built_faces,
                                                                         tmp_path, monkeypatch, on_device):
    """Two DataLoader workers (whose batches travel in reused shared memory) train, and evaluate to the same
    scores as the main process alone."""
    from ferv39k_hf.clips.batchmem import pool, shared

    monkeypatch.setattr(shared, "claims", collections.Counter())
    trained = tmp_path / "trained"
    run_script.main(["--model_name_or_path", str(tiny_checkpoints["videomae"]), "--dataset_dir", str(built_faces),
                     "--do_train", "--max_steps", "6", "--dataloader_num_workers", "2",
                     "--finish_on_device", on_device, *_common(trained)])
    assert json.loads((trained / "all_results.json").read_text())["train_loss"] > 0
    if pool.release_follows_storage():
        assert sum(shared.claims.values()) >= 6, "the training batches came in the workers' buffers"
    reports = {}
    for workers in ("0", "2"):
        out = tmp_path / f"eval-{workers}"
        run_script.main(["--model_name_or_path", str(trained), "--dataset_dir", str(built_faces), "--do_eval",
                         "--test_views", "2x2", "--dataloader_num_workers", workers, "--finish_on_device", on_device,
                         *_common(out)])
        reports[workers] = _check_results(out, _test_size(built_faces))[1]
    assert reports["0"]["confusion_matrix"] == reports["2"]["confusion_matrix"]


def test_predict_batch_writes_one_csv_row_per_clip(run_script, predict_script, tiny_checkpoints,
                                                     sample_archive, tmp_path):
    scene = sample_archive / "2_ClipsforFaceCrop" / "Medicine"
    clips = sorted(p for p in scene.glob("*/*") if p.is_dir())
    csv_path = tmp_path / "pred.csv"
    assert predict_script.main([str(tiny_checkpoints["timesformer"]), "--batch", str(scene),
                                "--output", str(csv_path), "--test_views", "1x2"]) == 0
    rows = list(csv.DictReader(csv_path.open()))
    assert [r["clip"] for r in rows] == [c.relative_to(scene).as_posix() for c in clips]
    for row in rows:
        probs = [float(row[k]) for k in row if k.startswith("p_")]
        assert len(probs) == 400 and sum(probs) == pytest.approx(1, abs=1e-3)  # the raw checkpoint's head
        assert float(row["probability"]) == pytest.approx(max(probs), abs=1e-6)


def test_push_to_hub_uploads_checkpoint_and_card_never_data(run_script, tiny_checkpoints, built_faces,
                                                              tmp_path, monkeypatch):
    import huggingface_hub.constants

    out = tmp_path / "videomae-ferv39k"
    with HubStub(lifetime_s=120) as stub:
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setenv("HF_ENDPOINT", stub.url)
        # older huggingface_hub (0.25) parses the URLs it gets back against HF_ENDPOINT as read at import
        monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", stub.url)
        run_script.main(["--model_name_or_path", str(tiny_checkpoints["videomae"]), "--dataset_dir", str(built_faces),
                         "--do_train", "--do_eval", "--max_steps", "1", "--push_to_hub",
                         "--hub_model_id", "team/videomae-ferv39k", "--hub_token", stub.token, *_common(out)])
        repo = stub.repo("team/videomae-ferv39k", repo_type="model")
    files = repo.files
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "video_preprocessor_config.json",
            "README.md", "all_results.json", "eval_per_scene.json"} <= set(files)
    assert not [name for name in files if name.endswith((".parquet", ".arrow", ".jpg", ".mp4"))]
    assert files["README.md"] == (out / "README.md").read_bytes()
    card = files["README.md"].decode()
    results = json.loads((out / "all_results.json").read_text())
    assert f"value: {round(100 * results['eval_war'], 2)}" in card and "name: UAR (Anomaly Issues)" in card
    assert "FERV39k (faces)" in card and "alphabetical order" in card and "segment" in card
    assert "## Personal data" in card and "type: recall" in card
    assert stub.token.encode() not in b"".join(files.values())


def test_from_scratch_config_overrides_through_the_builder_in_dfew_order(run_script, sample_archive, tmp_path):
    from transformers import AutoConfig

    out = tmp_path / "scratch"
    run_script.main(["--model_type", "timesformer", "--config_overrides", TINY["timesformer"].replace(
        "num_hidden_layers=2", "num_hidden_layers=1"), "--archive_dir", str(sample_archive), "--label_order", "dfew",
        "--do_train", "--do_eval", "--max_steps", "1", "--max_eval_samples", "16", *_common(out)])
    config = AutoConfig.from_pretrained(out)
    assert config.model_type == "timesformer" and config.num_hidden_layers == 1 and config.hidden_size == 32
    assert [config.id2label[i] for i in range(7)] == list(DFEW_ORDER)
    assert config.ferv39k["mean"] == [0.485, 0.456, 0.406]  # no processor config: ImageNet statistics
    card = (out / "README.md").read_text()
    assert "trained from scratch" in card and "dfew order" in card and "| 0 | Happy |" in card
    assert json.loads((out / "eval_per_scene.json").read_text())["num_clips"] == 16


def test_a_checkpoint_in_another_label_order_is_refused(tiny_checkpoints, tmp_path):
    from transformers import AutoConfig

    folder = tmp_path / "dfew-checkpoint"
    config = AutoConfig.from_pretrained(tiny_checkpoints["videomae"])
    config.id2label = dict(enumerate(DFEW_ORDER))
    config.label2id = {w: i for i, w in config.id2label.items()}
    config.save_pretrained(folder)
    from ferv39k_hf.training import build_model

    with pytest.raises(ValueError, match="another order|in the order"):
        build_model(list(CLASS_WORDS), model_name_or_path=str(folder), image_size=32)


@pytest.mark.slow  # run by .ci/run's slow step; over 3 s
def test_torchrun_two_cpu_processes(tiny_checkpoints, built_faces, tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(EXAMPLES / "run_video_classification.py"), "--model_name_or_path",
               str(tiny_checkpoints["videomae"]), "--dataset_dir", str(built_faces), "--do_train", "--do_eval",
               "--max_steps", "2", "--test_views", "2x1", "--ddp_backend", "gloo", *_common(out)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    _check_results(out, _test_size(built_faces))  # every test clip scored once, none twice
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 2 and state["train_batch_size"] == 4
    assert "devices: 2" in (out / "README.md").read_text()


@pytest.mark.slow
def test_small_model_from_scratch_learns_the_sample(run_script, built_faces, tmp_path):
    """Labels, frames and sampling are wired right: a small model learns the sample's classes."""
    out = tmp_path / "learn"
    run_script.main(["--dataset_dir", str(built_faces), "--do_train", "--do_eval", *FROM_SCRATCH,
                     "--output_dir", str(out), "--report_to", "none", "--save_strategy", "no", "--use_cpu",
                     "--disable_tqdm", "true", "--seed", "0", "--logging_strategy", "epoch"])
    results = json.loads((out / "all_results.json").read_text())
    assert results["eval_war"] >= 0.5 and results["eval_uar"] >= 0.4, results
