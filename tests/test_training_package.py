"""ferv39k_hf.training as a run uses it: predictions that `score` agrees with, runs that say what they do, no stale
scores in a reused output folder, one job under torchrun on CPUs, and docs/training.md's script run as written."""

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from test_training import EXAMPLES, _common, _example, _test_size, tiny_checkpoints  # noqa: F401

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

REPO = Path(__file__).resolve().parents[1]
EVAL_FILES = ("eval_results.json", "eval_predictions.csv", "eval_per_scene.json", "README.md", "training_curves.png")


def _train(tiny_checkpoints, built_faces, out, *extra):
    main = _example("run_video_classification").main
    return main(["--model_name_or_path", str(tiny_checkpoints["videomae"]), "--dataset_dir", str(built_faces),
                 "--do_train", "--do_eval", "--test_views", "2x1", *_common(out), *extra])


def test_a_runs_predictions_score_to_its_own_war_and_uar_and_compare(tiny_checkpoints, built_faces, tmp_path,
                                                                     capsys):
    from ferv39k_hf.cli import main as cli_main
    from ferv39k_hf.metrics import score_file

    runs = {}
    for name, steps in (("a", "2"), ("b", "3")):
        out = tmp_path / name
        metrics = _train(tiny_checkpoints, built_faces, out, "--max_steps", steps)
        results = json.loads((out / "all_results.json").read_text())
        assert results["eval_war"] == metrics["eval_war"] and results["eval_uar"] == metrics["eval_uar"]
        report = score_file(out / "eval_predictions.csv", built_faces, resamples=10)
        assert report["war"] == results["eval_war"] and report["uar"] == results["eval_uar"]
        assert not report["missing"] and report["clips_scored"] == _test_size(built_faces)
        runs[name] = out / "eval_predictions.csv"
    capsys.readouterr()
    assert cli_main(["score", str(runs["a"]), "--dataset", str(built_faces), "--resamples", "10"]) == 0
    war = float(re.search(r"WAR\s+([\d.]+) %", capsys.readouterr().out).group(1))
    assert war == pytest.approx(100 * json.loads((tmp_path / "a" / "all_results.json").read_text())["eval_war"],
                                abs=0.006)
    assert cli_main(["score", str(runs["a"]), "--compare", str(runs["b"]), "--dataset", str(built_faces),
                     "--resamples", "10", "--json"]) == 0
    comparison = json.loads(capsys.readouterr().out)
    assert comparison["a"]["war"] == json.loads((tmp_path / "a" / "all_results.json").read_text())["eval_war"]
    assert comparison["b"]["uar"] == json.loads((tmp_path / "b" / "all_results.json").read_text())["eval_uar"]
    assert "war_diff" in comparison["comparison"]


def test_a_run_summarises_itself_logs_its_loss_and_plots(tiny_checkpoints, built_faces, tmp_path, caplog):
    out = tmp_path / "run"
    with caplog.at_level(logging.INFO, logger="ferv39k_hf"):
        _train(tiny_checkpoints, built_faces, out, "--max_steps", "5", "--max_eval_samples", "20")
    summary = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("run summary"))
    for part in ("train 331, test 20", "alphabetical order", "0 Angry", "segment sampling of 4 frames at 32 pixels",
                 "2x1 test views", "parameters", "effective batch: 4 clips", "optimizer steps: 5"):
        assert part in summary, (part, summary)
    state = json.loads((out / "trainer_state.json").read_text())
    assert [e["step"] for e in state["log_history"] if "loss" in e] == [1, 2, 3, 4, 5]  # 5 steps: every step
    pytest.importorskip("matplotlib")
    assert (out / "training_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_loss_is_logged_a_few_dozen_times_unless_the_user_chose_an_interval():
    from transformers import TrainingArguments

    from ferv39k_hf.training import RunSummary

    summary = RunSummary(clips={"train": 10}, labels=["a"], protocol={}, model_name=None)
    for max_steps, given, expected in ((1680, 500, 56), (7, 500, 1), (1680, 10, 10)):
        args = TrainingArguments("unused", logging_steps=given, report_to="none", use_cpu=True)
        state = transformers.TrainerState(max_steps=max_steps, logging_steps=given)
        summary.on_train_begin(args, state, None)
        assert state.logging_steps == expected
        assert max_steps / state.logging_steps <= 50 or given != 500


def test_without_matplotlib_the_plot_is_skipped_with_one_line(tmp_path, monkeypatch, caplog):
    from ferv39k_hf.training import plot_training

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
    with caplog.at_level(logging.INFO, logger="ferv39k_hf"):
        assert plot_training(tmp_path, [{"step": 1, "loss": 2.0}]) is None
    assert [r.getMessage() for r in caplog.records] == [
        "matplotlib is not installed: no training_curves.png (pip install matplotlib to get one)"]
    assert not list(tmp_path.iterdir())


def test_a_failed_evaluation_in_a_reused_output_dir_leaves_no_earlier_scores(tiny_checkpoints, built_faces,
                                                                            tmp_path, monkeypatch):
    import ferv39k_hf.training as training

    out = tmp_path / "run"
    _train(tiny_checkpoints, built_faces, out, "--max_steps", "1", "--max_eval_samples", "20")
    earlier = {name: (out / name).read_bytes() for name in EVAL_FILES if (out / name).exists()}
    assert set(earlier) >= {"eval_results.json", "eval_predictions.csv", "README.md"}
    (out / "notes.txt").write_text("the user's own file")

    def dies(self, *args, **kwargs):
        raise RuntimeError("the evaluation died")

    monkeypatch.setattr(training.ClipViewTrainer, "evaluate", dies)
    with pytest.raises(RuntimeError, match="the evaluation died"):
        _train(tiny_checkpoints, built_faces, out, "--max_steps", "2", "--max_eval_samples", "20")
    assert not [name for name in EVAL_FILES if (out / name).exists()]
    results = json.loads((out / "all_results.json").read_text())
    assert not [key for key in results if key.startswith("eval_")] and results["train_loss"] > 0
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 2  # the new model is there
    (aside,) = out.glob("previous-run-*")
    assert {name: (aside / name).read_bytes() for name in earlier} == earlier
    assert (out / "notes.txt").read_text() == "the user's own file"  # not the package's: left alone


def test_an_unmarked_file_of_an_output_name_is_left_alone(tmp_path, caplog):
    from ferv39k_hf.training import set_aside_earlier_run

    (tmp_path / "eval_results.json").write_text("{}")
    with caplog.at_level(logging.WARNING, logger="ferv39k_hf"):
        assert set_aside_earlier_run(tmp_path) is None
    assert (tmp_path / "eval_results.json").read_text() == "{}" and "not marked" in caplog.text


def test_processes_launched_together_that_run_alone_are_refused(monkeypatch):
    from transformers import TrainingArguments

    from ferv39k_hf.training import check_one_world

    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="--ddp_backend gloo"):
        check_one_world(SimpleNamespace(world_size=1))
    check_one_world(SimpleNamespace(world_size=2))
    monkeypatch.delenv("WORLD_SIZE")
    check_one_world(TrainingArguments("unused", report_to="none", use_cpu=True))


@pytest.mark.slow  # two processes start torch and transformers: ~40 s idle, longer on a shared 2-core machine
def test_torchrun_on_cpus_without_a_backend_runs_one_job(tiny_checkpoints, built_faces, tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(EXAMPLES / "run_video_classification.py"), "--model_name_or_path",
               str(tiny_checkpoints["videomae"]), "--dataset_dir", str(built_faces), "--do_train", "--do_eval",
               "--max_steps", "2", "--test_views", "2x1", *_common(out)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=400, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "running them as one job on gloo" in done.stderr
    assert "devices: 2" in (out / "README.md").read_text()
    rows = (out / "eval_predictions.csv").read_text().splitlines()[1:]
    assert len(rows) == len({row.split(",")[0] for row in rows}) == _test_size(built_faces)


def _doc_script():
    text = (REPO / "docs" / "training.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "docs/training.md has no python block"
    return blocks[0]


def test_the_script_in_docs_training_md_runs_as_written(tiny_checkpoints, built_faces, tmp_path):
    out = tmp_path / "mine"
    env = {**os.environ, "PYTHONPATH": str(REPO), "FERV39K_DATA": str(built_faces), "OMP_NUM_THREADS": "1",
           "FERV39K_CHECKPOINT": str(tiny_checkpoints["videomae"]), "FERV39K_OUTPUT": str(out), "MAX_STEPS": "3"}
    script = tmp_path / "train_mine.py"
    script.write_text(_doc_script(), encoding="utf-8")
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=400, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "run summary" in done.stdout + done.stderr
    results = json.loads((out / "all_results.json").read_text())
    from ferv39k_hf.metrics import score_file

    report = score_file(out / "eval_predictions.csv", built_faces, resamples=10)
    assert (report["war"], report["uar"]) == (results["eval_war"], results["eval_uar"])
    assert json.loads((out / "config.json").read_text())["ferv39k"]["test_views"] == "2x2"
    assert "model-index" in (out / "README.md").read_text()
    pytest.importorskip("matplotlib")
    assert (out / "training_curves.png").is_file()
