"""`ferv39k-hf score`: predictions files against a built folder's test split, as a user runs it.

Numbers are checked against scikit-learn on the same pairs; bad files must end
in one error line naming the file, the lines and the counts.
"""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, recall_score

from ferv39k_hf.cli import build_parser, main
from ferv39k_hf.metrics import PUBLISHED, published_table, score_file
from ferv39k_hf.metrics.predictions import read_split
from ferv39k_hf.taxonomy import CLASS_WORDS, DFEW_ORDER

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:sklearn")
DOCS = Path(__file__).resolve().parent.parent / "docs" / "scoring.md"


@pytest.fixture(scope="module")
def split(built_faces):
    return read_split(built_faces, "test")


def guesses(split, skill, seed):
    """A model's class words: right with probability `skill`, else a random class."""
    rng = np.random.default_rng(seed)
    return [w if rng.random() < skill else str(rng.choice(CLASS_WORDS)) for w in split.words]


def write_csv(path, ids, predictions, extra=None):
    """clip_id, prediction and, with `extra` (one list of 7 cells per row), the probability columns."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["clip_id", "prediction"] + ([] if extra is None else [f"p_{w}" for w in CLASS_WORDS]))
        for index, (clip, prediction) in enumerate(zip(ids, predictions)):
            writer.writerow([clip, prediction] + ([] if extra is None else list(extra[index])))
    return path


FEW = 1000  # resamples: the default 10,000 costs ~1 s per report on this small split, 1,000 a tenth


def run(capsys, *argv):
    argv = [str(arg) for arg in argv]
    code = main(["score", *argv, *([] if "--resamples" in argv else ["--resamples", str(FEW)])])
    out, err = capsys.readouterr()
    return code, out, err


def test_scores_match_scikit_learn(tmp_path, built_faces, split, capsys):
    words = guesses(split, 0.6, seed=1)
    path = write_csv(tmp_path / "model.csv", split.clip_ids, words)
    code, out, err = run(capsys, path, "--dataset", built_faces, "--json")
    assert code == 0, err
    report = json.loads(out)
    refs = [CLASS_WORDS.index(w) for w in split.words]
    preds = [CLASS_WORDS.index(w) for w in words]
    assert report["war"] == pytest.approx(accuracy_score(refs, preds), abs=1e-12)
    assert report["uar"] == pytest.approx(recall_score(refs, preds, average="macro", labels=range(7)), abs=1e-12)
    recalls = recall_score(refs, preds, average=None, labels=range(7))
    assert [report["per_class_recall"][w] for w in CLASS_WORDS] == pytest.approx(list(recalls), abs=1e-12)
    for key in ("war", "uar"):
        low, high = report[f"{key}_ci"]
        assert low <= report[key] <= high
    for scene, entry in report["per_scene"].items():
        mask = [s == scene for s in split.scenes]
        sub_refs, sub_preds = np.array(refs)[mask], np.array(preds)[mask]
        assert entry["war"] == pytest.approx(accuracy_score(sub_refs, sub_preds), abs=1e-12)
        assert entry["support"] == int(np.sum(mask)) and entry["war_ci"][0] <= entry["war"] <= entry["war_ci"][1]
    assert sum(e["support"] for e in report["per_scenario"].values()) == len(split.clip_ids)
    assert report["bootstrap"] == {"method": "percentile bootstrap over clips", "resamples": FEW, "seed": 0,
                                   "confidence": 0.95}
    assert build_parser().parse_args(["score", "p.csv", "--dataset", "d"]).resamples == 10_000
    assert report == json.loads(json.dumps(score_file(path, built_faces, resamples=FEW)))  # the command = the function


def _not_synthetic(built_faces, tmp_path):
    """A copy of the build whose card lacks the synthetic flag, as a build of a real archive has none."""
    import shutil

    copy = tmp_path / "real-looking"
    shutil.copytree(built_faces, copy)
    card = copy / "README.md"
    text = card.read_text(encoding="utf-8")
    assert "ferv39k_synthetic: true\n" in text
    card.write_text(text.replace("ferv39k_synthetic: true\n", ""), encoding="utf-8")
    return copy


def test_text_report_names_every_number_and_ranks_the_file_among_published_results(tmp_path, built_faces, split,
                                                                                   capsys):
    path = write_csv(tmp_path / "mine.csv", split.clip_ids, split.words)  # all right: would rank first
    code, out, _ = run(capsys, path, "--dataset", built_faces)
    assert code == 0
    assert "WAR 100.00 %  95% CI [100.00, 100.00]" in out and "UAR 100.00 %  95% CI [100.00, 100.00]" in out
    # the sample's build is marked synthetic: no rank among real results, one line saying so
    assert "synthetic data: not ranked against published results" in out and "Published FERV39k" not in out
    assert not any(result.method in out for result in PUBLISHED)
    assert json.loads(run(capsys, path, "--dataset", built_faces, "--json")[1])["synthetic"] is True
    real = _not_synthetic(built_faces, tmp_path)
    code, out, _ = run(capsys, path, "--dataset", real)
    assert code == 0 and "synthetic" not in out
    table = out[out.index("Published FERV39k results"):].splitlines()
    assert table[1].split()[:3] == ["#", "method", "venue"] and "WAR %" in table[1] and "UAR %" in table[1]
    assert table[2].split()[:4] == [">", "1", "mine.csv", "this"]
    assert "NOT comparable" in table[2]  # the test split is not the official 7,847 clips
    for result in PUBLISHED:
        assert any(result.method in row and f"{result.war:.2f}" in row and f"{result.uar:.2f}" in row
                   for row in table)
    code, out, _ = run(capsys, path, "--dataset", real, "--rank-by", "uar")
    assert "ranked by UAR" in out


def test_class_ids_need_a_label_order_and_then_equal_the_words(tmp_path, built_faces, split, capsys):
    words = guesses(split, 0.5, seed=2)
    jsonl = tmp_path / "ids.jsonl"
    jsonl.write_text("".join(json.dumps({"clip_id": c, "prediction": DFEW_ORDER.index(w)}) + "\n"
                             for c, w in zip(split.clip_ids, words)))
    code, _, err = run(capsys, jsonl, "--dataset", built_faces)
    assert code == 1 and "ids.jsonl line 1" in err and "--label-order" in err and len(err.splitlines()) == 1
    by_ids = score_file(jsonl, built_faces, label_order="dfew", resamples=FEW)
    by_words = score_file(write_csv(tmp_path / "words.csv", split.clip_ids, words), built_faces, resamples=FEW)
    for key in ("war", "uar", "war_ci", "per_class_recall", "per_scene", "confusion_matrix"):
        assert by_ids[key] == by_words[key]
    wrong = score_file(jsonl, built_faces, label_order="alphabetical", resamples=FEW)  # the wrong order: other numbers
    assert wrong["confusion_matrix"] != by_words["confusion_matrix"]


def test_probability_columns_give_or_check_the_prediction(tmp_path, built_faces, split):
    rng = np.random.default_rng(3)
    probs = rng.dirichlet(np.ones(7), size=len(split.clip_ids))
    columns = [f"p_{w}" for w in CLASS_WORDS]
    cells = [[f"{p:.6f}" for p in row] for row in probs]
    argmax = [CLASS_WORDS[i] for i in probs.argmax(1)]
    only_probs = tmp_path / "probs.csv"
    with open(only_probs, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["clip", *columns])  # `clip`, as examples/predict.py names it
        writer.writerows([c, *row] for c, row in zip(split.clip_ids, cells))
    both = write_csv(tmp_path / "both.csv", split.clip_ids, argmax, extra=cells)
    words = write_csv(tmp_path / "words.csv", split.clip_ids, argmax)
    from_words = score_file(words, built_faces, resamples=FEW)
    assert score_file(only_probs, built_faces, resamples=FEW)["confusion_matrix"] == from_words["confusion_matrix"]
    assert score_file(both, built_faces, resamples=FEW)["war"] == from_words["war"]
    disagree = write_csv(tmp_path / "disagree.csv", split.clip_ids, argmax, extra=cells)
    lines = disagree.read_text().splitlines()
    row = lines[5].split(",")
    row[1] = next(w for w in CLASS_WORDS if w != row[1])
    lines[5] = ",".join(row)
    disagree.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"disagree.csv: the prediction is not the most probable class on 1 line\(s\): "
                                         r"line 6"):
        score_file(disagree, built_faces, resamples=FEW)


def test_missing_repeated_and_unknown_clips_are_one_error_listing_them(tmp_path, built_faces, split, capsys):
    ids = list(split.clip_ids)
    rows = ids[3:] + [ids[10], "/any/prefix/2_ClipsforFaceCrop/Crime/Angry/9999"]  # 3 missing, 1 repeated, 1 unknown
    path = write_csv(tmp_path / "bad.csv", rows, ["Happy"] * len(rows))
    code, _, err = run(capsys, path, "--dataset", built_faces)
    assert code == 1 and len(err.splitlines()) == 1
    assert "bad.csv" in err and "1 clip(s) repeated" in err and f"{ids[10]} (lines 9, {len(ids) - 1})" in err
    assert f"3 of the {len(ids)} test clips missing: {ids[0]}, {ids[1]}, {ids[2]}" in err
    assert f"1 clip(s) not in any split of the folder: Crime/Angry/9999 (line {len(ids)})" in err


def test_a_file_of_the_whole_archive_scores_its_split_and_counts_the_rest_as_ignored(tmp_path, built_faces, split,
                                                                                      capsys):
    # what examples/predict.py --batch writes for 2_ClipsforFaceCrop: train and test clips, archive paths
    train = read_split(built_faces, "train")
    rows = [f"/data/FERV39k/2_ClipsforFaceCrop/{c}" for c in train.clip_ids + split.clip_ids]
    words = train.words + guesses(split, 0.6, seed=9)
    path = write_csv(tmp_path / "all.csv", rows, words)
    code, out, err = run(capsys, path, "--dataset", built_faces)
    assert code == 0, err
    assert out.splitlines()[2] == f"  ignored {len(train.clip_ids)} clip(s) of split train"
    assert "PARTIAL" not in out and "missing" not in out and f"{len(split.clip_ids)} clips" in out
    report = score_file(path, built_faces, resamples=FEW)
    assert report["ignored"] == {"train": len(train.clip_ids)} and report["missing"] == [] == report["unknown"]
    only_test = score_file(write_csv(tmp_path / "test.csv", split.clip_ids, words[len(train.clip_ids):]),
                           built_faces, resamples=FEW)
    assert (report["war"], report["uar"]) == (only_test["war"], only_test["uar"]) and only_test["ignored"] == {}
    # scored against train, the test clips are the ignored ones
    report = score_file(path, built_faces, split="train", resamples=FEW)
    assert report["ignored"] == {"test": len(split.clip_ids)} and report["war"] == 1.0
    # partial only when clips of the asked split are missing, and then it says so
    short = write_csv(tmp_path / "short.csv", rows[:-5], words[:-5])
    code, _, err = run(capsys, short, "--dataset", built_faces)
    assert code == 1 and f"5 of the {len(split.clip_ids)} test clips missing" in err and "train" not in err
    code, out, _ = run(capsys, short, "--dataset", built_faces, "--allow-partial")
    assert code == 0 and "PARTIAL: " in out and "5 missing" in out


def test_allow_partial_scores_what_is_there_and_says_what_is_missing(tmp_path, built_faces, split, capsys):
    words = guesses(split, 0.6, seed=4)
    keep = list(range(20, len(split.clip_ids)))
    rows = [split.clip_ids[i] for i in keep] + ["War/Fear/9999"]
    path = write_csv(tmp_path / "part.csv", rows, [words[i] for i in keep] + ["Fear"])
    code, _, err = run(capsys, path, "--dataset", built_faces)
    assert code == 1 and "--allow-partial" in err
    code, out, _ = run(capsys, path, "--dataset", built_faces, "--allow-partial")
    assert code == 0
    assert f"PARTIAL: {len(keep)} of {len(split.clip_ids)} clips scored; 20 missing." in out
    assert "ignored 1 clip(s) that are in no split of the folder" in out
    report = score_file(path, built_faces, allow_partial=True, resamples=FEW)
    assert report["missing"] == split.clip_ids[:20] and report["unknown"] == [{"clip_id": "War/Fear/9999",
                                                                               "line": len(rows) + 1}]
    refs = [CLASS_WORDS.index(split.words[i]) for i in keep]
    preds = [CLASS_WORDS.index(words[i]) for i in keep]
    assert report["war"] == pytest.approx(accuracy_score(refs, preds))
    repeated = write_csv(tmp_path / "twice.csv", rows + rows[:1], ["Fear"] * (len(rows) + 1))
    with pytest.raises(ValueError, match="repeated"):  # which prediction to score is undefined: still an error
        score_file(repeated, built_faces, allow_partial=True, resamples=FEW)


def test_compare_finds_a_better_model_and_not_a_file_against_itself(tmp_path, built_faces, split, capsys):
    better = write_csv(tmp_path / "better.csv", split.clip_ids, guesses(split, 0.9, seed=5))
    worse = write_csv(tmp_path / "worse.csv", split.clip_ids, guesses(split, 0.3, seed=6))
    code, out, err = run(capsys, better, "--compare", worse, "--dataset", built_faces, "--json")
    assert code == 0, err
    comparison = json.loads(out)["comparison"]
    assert comparison["war_p"] < 0.05 and comparison["uar_p"] < 0.05 and comparison["mcnemar_p"] < 0.05
    for key in ("war", "uar"):
        low, high = comparison[f"{key}_diff_ci"]
        assert 0 < low <= comparison[f"{key}_diff"] <= high
    code, out, _ = run(capsys, better, "--compare", worse, "--dataset", built_faces)
    assert code == 0
    # the comparison alone: what docs/scoring.md shows, no full reports, no published table
    assert len(out.splitlines()) <= 10 and "per-class recall" not in out and "Published" not in out
    assert [line.split()[0] for line in out.splitlines() if line.startswith("  ")][1:] == [
        "WAR", "UAR", "McNemar's", "(synthetic"]  # after the column header
    code, full, _ = run(capsys, better, "--compare", worse, "--dataset", built_faces, "--full")
    assert code == 0 and "per-class recall" in full and full.count("95% CI [") >= 4
    assert "synthetic data: not ranked against published results" in full
    code, out, _ = run(capsys, better, "--compare", better, "--dataset", built_faces)
    assert code == 0
    assert "A right and B wrong on 0 clips, B right and A wrong on 0: p = 1.0000" in out
    same = json.loads(run(capsys, better, "--compare", better, "--dataset", built_faces, "--json")[1])["comparison"]
    assert same["war_p"] >= 0.5 and same["uar_p"] >= 0.5 and same["mcnemar_p"] == 1.0
    partial = write_csv(tmp_path / "partial.csv", split.clip_ids[1:], guesses(split, 0.5, seed=7)[1:])
    code, _, err = run(capsys, better, "--compare", partial, "--dataset", built_faces, "--allow-partial")
    assert code == 1 and "do not cover the same clips: 1 only in the first" in err


def test_plot_draws_a_png(tmp_path, built_faces, split, capsys):
    pytest.importorskip("matplotlib")
    from PIL import Image

    path = write_csv(tmp_path / "m.csv", split.clip_ids, guesses(split, 0.6, seed=8))
    code, _, err = run(capsys, path, "--dataset", built_faces, "--plot", tmp_path / "fig.png", "--resamples", "500")
    assert code == 0, err
    with Image.open(tmp_path / "fig.png") as image:
        assert image.format == "PNG" and image.width >= 800
    code, _, err = run(capsys, path, "--dataset", built_faces, "--plot", tmp_path / "no" / "fig.png")
    assert code == 1 and "does not exist" in err


@pytest.mark.parametrize("content, message", [
    ("", "the file is empty"),
    ("clip_id,label\nAction/Angry/0001,Angry\n", "needs a clip_id column and a prediction column"),
    ("clip_id,prediction\nAction/Angry/0001,Furious\n", "line 2: prediction 'Furious' is neither"),
    ("clip_id,prediction\nAction/Angry/0001,9\n", "line 2: prediction 9 is not a class id"),
    ('{"clip_id": "Action/Angry/0001", "prediction": "Angry"}\n[1]\n', "line 2: not a JSON object"),
    ("clip_id,prediction,p_Angry\nAction/Angry/0001,Angry,1\n", "all 7 or none; missing p_Disgust"),
])
def test_unreadable_files_are_errors_naming_file_and_line(tmp_path, built_faces, content, message):
    path = tmp_path / "f.csv"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        score_file(path, built_faces, label_order="alphabetical", resamples=FEW)


def test_a_folder_that_is_not_a_build_is_an_error(tmp_path, built_faces, capsys):
    path = write_csv(tmp_path / "p.csv", ["Action/Angry/0001"], ["Angry"])
    code, _, err = run(capsys, path, "--dataset", tmp_path)
    assert code == 1 and "README.md" in err
    code, _, err = run(capsys, path, "--dataset", built_faces, "--split", "validation")
    assert code == 1 and "no split 'validation'" in err


def test_docs_show_the_published_table_generated_from_published_py():
    # one place per fact: the table in docs/scoring.md is published_table()'s output, character for character
    assert published_table() in DOCS.read_text(encoding="utf-8")


def test_a_label_column_that_disagrees_with_the_dataset_is_refused(built_faces, tmp_path, capsys):
    """A training run's file names each clip's label: one of another build or label order is caught, not scored."""
    clips = read_split(built_faces, "test")
    rows = [f"{c},{w},{w}" for c, w in zip(clips.clip_ids, clips.words)]
    first_word = clips.words[0]
    other = next(w for w in ("Angry", "Happy") if w != first_word)
    good, bad = tmp_path / "good.csv", tmp_path / "bad.csv"
    good.write_text("clip_id,label,prediction\n" + "\n".join(rows) + "\n")
    bad.write_text("clip_id,label,prediction\n" + "\n".join([f"{clips.clip_ids[0]},{other},{first_word}"] + rows[1:])
                   + "\n")
    assert main(["score", str(good), "--dataset", str(built_faces), "--resamples", "10", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["war"] == 1.0
    assert main(["score", str(bad), "--dataset", str(built_faces), "--resamples", "10"]) == 1
    err = capsys.readouterr().err
    assert f"line 2 ({clips.clip_ids[0]}: file says {other}, dataset {first_word})" in err
