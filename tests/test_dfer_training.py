"""The training example on DFEW folds: --fold K trains on fold K's train set and scores its test set, --fold all
runs the five and reports their mean ± std, and the five predictions files give `score` the same numbers."""

import json

import pytest
from test_training import _common, _example, tiny_checkpoints  # noqa: F401

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def dfew_built(tmp_path_factory):
    from ferv39k_hf.dataset.export import build_dataset_folder
    from ferv39k_hf.synthetic_dfer import write_dfer_sample

    root = tmp_path_factory.mktemp("dfew-archive") / "download"
    write_dfer_sample(root, "dfew", per_class=2, videos=False)
    out = tmp_path_factory.mktemp("dfew-built") / "dfew"
    build_dataset_folder(root, out)
    return out


def _train(tiny_checkpoints, built, out, *extra):
    main = _example("run_video_classification").main
    return main(["--model_name_or_path", str(tiny_checkpoints["videomae"]), "--dataset_dir", str(built),
                 "--do_train", "--do_eval", "--max_steps", "1", *_common(out), *extra])


def test_fold_k_trains_on_its_train_set_and_scores_its_test_set(tiny_checkpoints, dfew_built, tmp_path):
    import datasets

    import ferv39k_hf

    out = tmp_path / "fold2"
    metrics = _train(tiny_checkpoints, dfew_built, out, "--fold", "2")
    expected = ferv39k_hf.fold(datasets.load_dataset(str(dfew_built)), 2)["test"]["clip_id"]
    rows = (out / "eval_predictions.csv").read_text().splitlines()
    assert sorted(line.split(",")[0] for line in rows[1:]) == sorted(expected)
    assert json.loads((out / "all_results.json").read_text())["eval_war"] == metrics["eval_war"]
    protocol = json.loads((out / "config.json").read_text())["ferv39k"]
    assert protocol["dataset"] == "dfew" and protocol["fold"] == 2 and protocol["label_order"] == "dfew"
    card = (out / "README.md").read_text()
    assert "trained on **DFEW**" in card and "fold 2's test set" in card and "FERV39k" not in card


def test_a_dfew_folder_without_a_fold_is_refused_in_one_line(tiny_checkpoints, dfew_built, tmp_path):
    with pytest.raises(ValueError, match=r"five official folds and no single split: pass --fold K"):
        _train(tiny_checkpoints, dfew_built, tmp_path / "none")


@pytest.mark.slow  # five training runs
def test_fold_all_runs_five_and_score_agrees_with_each(tiny_checkpoints, dfew_built, tmp_path, capsys):
    from ferv39k_hf.cli import main as cli_main

    summary = _train(tiny_checkpoints, dfew_built, tmp_path, "--fold", "all")
    folds = json.loads((tmp_path / "folds_results.json").read_text())
    wars = [json.loads((tmp_path / f"fold{k}" / "all_results.json").read_text())["eval_war"] for k in range(1, 6)]
    assert [f["war"] for f in folds["folds"]] == wars and summary["war_mean"] == pytest.approx(sum(wars) / 5)
    files = [str(tmp_path / f"fold{k}" / "eval_predictions.csv") for k in range(1, 6)]
    capsys.readouterr()
    assert cli_main(["score", *files, "--dataset", str(dfew_built), "--json", "--resamples", "50"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [f["war"] for f in report["folds"]] == pytest.approx(wars)
    assert report["war_mean"] == pytest.approx(folds["war_mean"]) and report["war_std"] == pytest.approx(
        folds["war_std"])
