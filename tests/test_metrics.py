"""WAR/UAR metric: numbers against scikit-learn, per-scene breakdowns, errors, views, bootstrap, figure.

Every number is checked against scikit-learn (or against the metric computed
on the matching subset), through the numpy core and through
``evaluate.load(ferv39k_hf.metrics.WAR_UAR)`` offline.
"""

import ast
import doctest
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, balanced_accuracy_score, recall_score
from sklearn.metrics import confusion_matrix as sk_confusion_matrix

import ferv39k_hf
from ferv39k_hf import taxonomy
from ferv39k_hf.metrics import (
    WAR_UAR,
    ScoringError,
    average_views,
    bootstrap_ci,
    clip_labels,
    confusion_matrix,
    plot_confusion_matrix,
    scenes_from_clip_ids,
    score,
)

# scikit-learn warns on exactly the inputs this file is about (absent classes).
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:sklearn")

LABELS = list(range(7))
METRIC_DIR = Path(WAR_UAR).parent


@pytest.fixture(scope="module")
def metric():
    evaluate = pytest.importorskip("evaluate")
    return evaluate.load(WAR_UAR)


def random_case(rng, n=None, absent=()):
    """Predictions and references over a skewed class mix; classes in `absent` never occur as references."""
    n = int(rng.integers(1, 400)) if n is None else n
    weights = rng.dirichlet(np.full(7, 0.7))
    weights[list(absent)] = 0
    if weights.sum() == 0:
        weights[[c for c in LABELS if c not in absent][0]] = 1
    refs = rng.choice(7, size=n, p=weights / weights.sum())
    # Right with a random skill, else a random (possibly absent-from-references) class.
    right = rng.random(n) < rng.random()
    preds = np.where(right, refs, rng.integers(0, 7, size=n))
    return preds, refs


def assert_matches_sklearn(result, preds, refs):
    present = sorted(set(np.asarray(refs).tolist()))
    assert result["war"] == pytest.approx(accuracy_score(refs, preds), abs=1e-12)
    assert result["uar"] == pytest.approx(balanced_accuracy_score(refs, preds), abs=1e-12)
    assert result["uar"] == pytest.approx(recall_score(refs, preds, labels=present, average="macro"), abs=1e-12)
    assert result["confusion_matrix"] == sk_confusion_matrix(refs, preds, labels=LABELS).tolist()
    recalls = recall_score(refs, preds, labels=LABELS, average=None, zero_division=0)
    words = result["class_words"]
    for class_id, word in enumerate(words):
        support = int(np.sum(np.asarray(refs) == class_id))
        assert result["support"][word] == support
        if support:
            assert result["per_class_recall"][word] == pytest.approx(recalls[class_id], abs=1e-12)
        else:
            assert result["per_class_recall"][word] is None
    assert result["uar_classes"] == len(present)
    for value in (result["war"], result["uar"], *[r for r in result["per_class_recall"].values() if r is not None]):
        assert 0.0 <= value <= 1.0


# ---------------------------------------------------------------- against scikit-learn


def test_random_inputs_match_sklearn():
    rng = np.random.default_rng(20220601)
    for _ in range(150):
        absent = tuple(rng.choice(7, size=int(rng.integers(0, 4)), replace=False))
        preds, refs = random_case(rng, absent=absent)
        assert_matches_sklearn(score(predictions=preds, references=refs), preds, refs)


ADVERSARIAL = {
    "class absent from references": ([0, 1, 2, 3, 4, 5, 0, 1], [0, 1, 2, 3, 4, 5, 1, 0]),
    "class absent from predictions": ([0, 0, 1, 2, 3, 4, 5], [0, 6, 1, 2, 3, 4, 6]),
    "all one class": ([4] * 9, [4] * 9),
    "references one class, predictions spread": ([0, 1, 2, 3, 4, 5, 6], [2] * 7),
    "predictions one class": ([3] * 7, [0, 1, 2, 3, 4, 5, 6]),
    "single example, right": ([6], [6]),
    "single example, wrong": ([0], [6]),
    "all wrong": ([1, 2, 3, 4, 5, 6, 0], [0, 1, 2, 3, 4, 5, 6]),
    "prediction outside the reference classes": ([3, 3, 0, 4, 5, 6, 4, 2], [3, 0, 0, 4, 5, 5, 1, 2]),
}


@pytest.mark.parametrize("preds, refs", ADVERSARIAL.values(), ids=ADVERSARIAL.keys())
def test_adversarial_inputs_match_sklearn(preds, refs, metric):
    assert_matches_sklearn(score(predictions=preds, references=refs), preds, refs)
    assert_matches_sklearn(metric.compute(predictions=preds, references=refs), preds, refs)


def test_uar_is_not_sklearn_macro_recall_without_labels():
    # Surprise (6) is predicted but never a reference: the macro pitfall of facts section 4.
    preds, refs = ADVERSARIAL["prediction outside the reference classes"]
    result = score(predictions=preds, references=refs)
    naive = recall_score(refs, preds, average="macro", zero_division=0)
    assert naive == pytest.approx(4 / 7)  # 6 present classes' recalls sum to 4, divided by 7
    assert result["uar"] == pytest.approx(4 / 6)
    assert result["uar"] != pytest.approx(naive)
    present = sorted(set(refs))
    assert result["uar"] == pytest.approx(recall_score(refs, preds, labels=present, average="macro"))
    # With all 7 classes in the references, as on the official test set, UAR is the 7-class mean.
    full = score(predictions=preds + [6], references=refs + [6])
    assert full["uar"] == pytest.approx(recall_score(refs + [6], preds + [6], labels=LABELS, average="macro"))


def test_evaluate_module_matches_sklearn_on_random_inputs(metric):
    rng = np.random.default_rng(7)
    for _ in range(25):
        preds, refs = random_case(rng, absent=tuple(rng.choice(7, size=int(rng.integers(0, 3)), replace=False)))
        result = metric.compute(predictions=preds.tolist(), references=refs)
        assert_matches_sklearn(result, preds, refs)
        assert result == score(predictions=preds, references=refs)


def test_evaluate_add_batch_equals_one_compute(metric):
    rng = np.random.default_rng(3)
    preds, refs = random_case(rng, n=120)
    scenes = rng.choice(taxonomy.SCENES, size=120)
    for start in range(0, 120, 50):
        metric.add_batch(predictions=preds[start:start + 50], references=refs[start:start + 50])
    batched = metric.compute(scenes=scenes.tolist())
    assert batched == score(predictions=preds, references=refs, scenes=scenes)


def test_add_batch_with_scenes_equals_one_call_scoring(metric):
    # issue 16.7: scenes travel with each batch, as names or as the dataset's scene ids
    rng = np.random.default_rng(31)
    preds, refs = random_case(rng, n=230)
    scenes = random_scenes(rng, 230, 9)
    for start in range(0, 230, 64):
        part = slice(start, start + 64)
        given = scenes[part] if start % 128 == 0 else [taxonomy.SCENES.index(s) for s in scenes[part]]
        metric.add_batch(predictions=preds[part], references=refs[part].tolist(), scenes=given)
    batched = metric.compute(bootstrap=50, seed=2)
    assert batched == score(predictions=preds, references=refs, scenes=scenes, bootstrap=50, seed=2)
    assert_breakdown_matches_subsets(batched, preds, refs, scenes)


def test_add_batch_without_scenes_gives_no_breakdown(metric):
    rng = np.random.default_rng(32)
    preds, refs = random_case(rng, n=90)
    for start in range(0, 90, 40):
        metric.add_batch(predictions=preds[start:start + 40], references=refs[start:start + 40])
    result = metric.compute()
    assert result == score(predictions=preds, references=refs) and "per_scene" not in result
    assert metric.compute(predictions=preds, references=refs) == result


def test_add_one_example_at_a_time_with_scenes(metric):
    rng = np.random.default_rng(33)
    preds, refs = random_case(rng, n=25)
    scenes = random_scenes(rng, 25, 4)
    for pred, ref, scene in zip(preds, refs, scenes):
        metric.add(prediction=pred, reference=ref, scenes=scene)
    assert metric.compute() == score(predictions=preds, references=refs, scenes=scenes)


def test_scenes_given_for_some_batches_or_twice_are_errors(metric):
    metric.add_batch(predictions=[0, 1], references=[0, 1], scenes=["War", "Crime"])
    metric.add_batch(predictions=[2], references=[2])
    with pytest.raises(ScoringError, match="1 of 3 examples were added without scenes"):
        metric.compute()
    metric.add_batch(predictions=[0, 1], references=[0, 1], scenes=["War", "Crime"])
    with pytest.raises(ScoringError, match="give them once"):
        metric.compute(scenes=["War", "Crime"])
    with pytest.raises(ScoringError, match=r"scenes\[1\] = 'Beach'"):
        metric.add_batch(predictions=[0, 1], references=[0, 1], scenes=["War", "Beach"])
    with pytest.raises(ScoringError, match="2 scenes but 3 predictions"):
        metric.add_batch(predictions=[0, 1, 2], references=[0, 1, 2], scenes=["War", "War"])


def test_distributed_add_batch_keeps_each_examples_scene(tmp_path):
    # evaluate's distributed mode (num_process=2): each rank writes its own batches, rank 0 computes
    # over both. Threads stand in for processes; the ranks share only the cache folder, as on a cluster.
    evaluate = pytest.importorskip("evaluate")
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(34)
    preds, refs = random_case(rng, n=150)
    scenes = random_scenes(rng, 150, 12)

    def rank(process_id):
        metric = evaluate.load(WAR_UAR, num_process=2, process_id=process_id, experiment_id="ranks",
                               cache_dir=str(tmp_path))
        for start in range(75 * process_id, 75 * process_id + 75, 30):
            stop = min(start + 30, 75 * process_id + 75)
            metric.add_batch(predictions=preds[start:stop], references=refs[start:stop], scenes=scenes[start:stop])
        return metric.compute()

    with ThreadPoolExecutor(2) as pool:
        first, second = pool.map(rank, [0, 1])
    assert second is None
    assert first == score(predictions=preds, references=refs, scenes=scenes)


def test_confusion_matrix_rows_are_references():
    cm = confusion_matrix(predictions=[1, 1, 2], references=[0, 0, 0])
    assert cm[0].tolist() == [0, 2, 1, 0, 0, 0, 0]
    assert cm.sum() == 3 and cm[:, 0].sum() == 0


# ---------------------------------------------------------------- per scene, per scenario


def random_scenes(rng, n, pool_size):
    pool = rng.choice(taxonomy.SCENES, size=pool_size, replace=False)
    return rng.choice(pool, size=n)


def assert_breakdown_matches_subsets(result, preds, refs, scenes):
    scenes = np.asarray(scenes, dtype=object)
    scenarios = np.asarray([taxonomy.SCENE_TO_SCENARIO[s] for s in scenes], dtype=object)
    for key, groups, order in (("per_scene", scenes, taxonomy.SCENES), ("per_scenario", scenarios, taxonomy.SCENARIOS)):
        assert list(result[key]) == [name for name in order if name in set(groups)]
        for name, entry in result[key].items():
            mask = groups == name
            subset = score(predictions=preds[mask], references=refs[mask])
            assert entry["war"] == subset["war"] and entry["uar"] == subset["uar"]
            assert entry["support"] == int(mask.sum()) == sum(subset["support"].values())
            assert entry["uar_classes"] == subset["uar_classes"]
            assert entry["uar"] == pytest.approx(balanced_accuracy_score(refs[mask], preds[mask]), abs=1e-12)


def test_per_scene_and_scenario_equal_the_metric_on_each_subset():
    rng = np.random.default_rng(11)
    for _ in range(25):
        n = int(rng.integers(1, 500))
        preds, refs = random_case(rng, n=n)
        scenes = random_scenes(rng, n, int(rng.integers(1, 23)))
        result = score(predictions=preds, references=refs, scenes=scenes)
        assert_breakdown_matches_subsets(result, preds, refs, scenes)
        assert_matches_sklearn(result, preds, refs)  # the overall numbers ignore scenes


def test_per_scene_through_evaluate(metric):
    rng = np.random.default_rng(5)
    preds, refs = random_case(rng, n=300)
    scenes = random_scenes(rng, 300, 22)
    result = metric.compute(predictions=preds, references=refs, scenes=scenes.tolist())
    assert_breakdown_matches_subsets(result, preds, refs, scenes)
    assert set(result["per_scenario"]) <= set(taxonomy.SCENARIOS)


def test_scene_ids_mean_the_dataset_classlabel_names():
    rng = np.random.default_rng(2)
    preds, refs = random_case(rng, n=60)
    ids = rng.integers(0, 22, size=60)
    by_id = score(predictions=preds, references=refs, scenes=ids)
    by_name = score(predictions=preds, references=refs, scenes=[taxonomy.SCENES[i] for i in ids])
    assert by_id == by_name


def test_official_test_composition_has_all_classes_in_every_scenario():
    # Per-scene UAR on the real test set averages all 7 classes in every scene (Experiment has 2 Disgust).
    counts = taxonomy.official_counts("test")
    refs, scenes = [], []
    for (scene, word), n in counts.items():
        refs += [taxonomy.CLASS_WORDS.index(word)] * n
        scenes += [scene] * n
    refs = np.asarray(refs)
    result = score(predictions=refs, references=refs, scenes=scenes)
    assert result["war"] == result["uar"] == 1.0 and sum(result["support"].values()) == 7847
    assert all(entry["uar_classes"] == 7 for entry in result["per_scene"].values())
    assert result["per_scene"]["Experiment"]["support"] == 113
    assert [e["support"] for e in result["per_scenario"].values()] == [2282, 1768, 2042, 1755]


# ---------------------------------------------------------------- label order


def test_label_order_names_the_classes(metric):
    preds, refs = [0, 0, 1, 6], [0, 1, 1, 6]
    dfew = score(predictions=preds, references=refs, label_order="dfew")
    assert dfew["class_words"] == list(taxonomy.DFEW_ORDER)
    assert list(dfew["per_class_recall"]) == list(taxonomy.DFEW_ORDER)
    assert dfew["per_class_recall"]["Happy"] == 1.0 and dfew["per_class_recall"]["Sad"] == 0.5
    assert dfew["support"]["Fear"] == 1
    default = score(predictions=preds, references=refs)
    assert default["class_words"] == list(taxonomy.CLASS_WORDS) == taxonomy.label_names("alphabetical")
    assert default["per_class_recall"]["Angry"] == 1.0
    assert (default["war"], default["uar"]) == (dfew["war"], dfew["uar"])
    assert score(predictions=preds, references=refs, class_words=taxonomy.DFEW_ORDER) == dfew
    assert metric.compute(predictions=preds, references=refs, label_order="dfew") == dfew


def test_config_name_sets_the_default_label_order():
    evaluate = pytest.importorskip("evaluate")
    dfew_metric = evaluate.load(WAR_UAR, "dfew")
    assert dfew_metric.compute(predictions=[0], references=[0])["class_words"] == list(taxonomy.DFEW_ORDER)
    with pytest.raises(ValueError, match="bogus"):
        evaluate.load(WAR_UAR, "bogus")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"label_order": "reverse"}, "unknown label order"),
        ({"class_words": ["Angry", "Disgust"]}, "7 FERV39k class words"),
        ({"class_words": list(taxonomy.CLASS_WORDS[:-1]) + ["Contempt"]}, "Contempt"),
        ({"class_words": taxonomy.DFEW_ORDER, "label_order": "alphabetical"}, "contradict"),
    ],
)
def test_bad_label_names_are_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        score(predictions=[0], references=[0], **kwargs)


# ---------------------------------------------------------------- bad input


BAD_INPUT = {
    "mismatched lengths": ({"predictions": [0, 1], "references": [0]}, "2 predictions but 1 references"),
    "id 7": ({"predictions": [0, 7], "references": [0, 1]}, r"predictions\[1\] = 7"),
    "negative id": ({"predictions": [0, 1], "references": [0, -1]}, r"references\[1\] = -1"),
    "empty": ({"predictions": [], "references": []}, "empty"),
    "unknown scene": (
        {"predictions": [0, 1], "references": [0, 1], "scenes": ["Crime", "Beach"]},
        r"scenes\[1\] = 'Beach'",
    ),
    "misspelt scene": ({"predictions": [0], "references": [0], "scenes": ["LiveShow"]}, "LiveShow"),
    "scene id 22": ({"predictions": [0], "references": [0], "scenes": [22]}, r"scenes\[0\] = 22"),
    "scenes too short": ({"predictions": [0, 1], "references": [0, 1], "scenes": ["Crime"]}, "1 scenes but 2"),
}


@pytest.mark.parametrize("kwargs, message", BAD_INPUT.values(), ids=BAD_INPUT.keys())
def test_bad_input_is_an_error(kwargs, message, metric):
    with pytest.raises(ScoringError, match=message):
        score(**kwargs)
    with pytest.raises(ValueError):  # evaluate checks lengths itself; the rest reaches score()
        metric.compute(**kwargs)


@pytest.mark.parametrize(
    "preds, message",
    [
        (np.array([0.2, 0.8]), "integer class ids"),
        (np.array([True, False]), "integer class ids"),
        (np.zeros((2, 7), dtype=np.int64), "1-D"),
        (["Happy", "Sad"], "integer class ids"),
    ],
)
def test_non_integer_predictions_are_errors(preds, message):
    with pytest.raises(ScoringError, match=message):
        score(predictions=preds, references=[0, 1])


@pytest.mark.parametrize("bootstrap, confidence", [(-1, 0.95), (2.5, 0.95), (True, 0.95), (10, 1.0), (10, 0.0)])
def test_bad_bootstrap_settings_are_errors(bootstrap, confidence):
    with pytest.raises(ScoringError):
        score(predictions=[0, 1], references=[0, 1], bootstrap=bootstrap, confidence=confidence)


# ---------------------------------------------------------------- multi-view


def test_average_views_is_the_softmax_mean_per_clip():
    logits = np.array([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 3.0], [1.0, 1.0, 1.0]])
    ids, probs = average_views(["b", "a", "b", "a"], logits)
    soft = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    assert ids == ["a", "b"]
    np.testing.assert_allclose(probs, [(soft[1] + soft[3]) / 2, (soft[0] + soft[2]) / 2], rtol=1e-12)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)


def test_average_views_ignores_view_order_and_accepts_probabilities():
    rng = np.random.default_rng(9)
    clips = [f"Crime/Angry/{i:04d}" for i in range(30)]
    view_ids = [clip for clip in clips for _ in range(4)]
    logits = rng.normal(scale=5, size=(120, 7))
    ids, probs = average_views(view_ids, logits, views_per_clip=4)
    order = rng.permutation(120)
    ids_shuffled, probs_shuffled = average_views([view_ids[i] for i in order], logits[order])
    assert ids == ids_shuffled == sorted(clips)
    np.testing.assert_allclose(probs, probs_shuffled, rtol=1e-12)
    soft = np.exp(logits - logits.max(axis=1, keepdims=True))
    soft /= soft.sum(axis=1, keepdims=True)
    _, from_probs = average_views(view_ids, soft, inputs="probs")
    np.testing.assert_allclose(probs, from_probs, rtol=1e-12)
    # Averaging probabilities is not averaging logits: the two can pick different classes.
    _, huge = average_views(["c", "c"], np.array([[1000.0, 0.0], [0.0, 999.0]]))
    assert np.isfinite(huge).all() and huge[0] == pytest.approx([0.5, 0.5])


def test_average_views_takes_torch_tensors():
    torch = pytest.importorskip("torch")
    logits = torch.randn(6, 7, dtype=torch.bfloat16, requires_grad=True)
    ids, probs = average_views(["x", "y"] * 3, logits)
    _, expected = average_views(["x", "y"] * 3, logits.detach().float().numpy())
    np.testing.assert_allclose(probs, expected)


@pytest.mark.parametrize(
    "ids, scores, kwargs, message",
    [
        (["a", "b"], np.zeros((3, 7)), {}, "2 clip ids but 3 rows"),
        (["a", "a", "b"], np.zeros((3, 7)), {"views_per_clip": 2}, "clip b has 1 views, expected 2"),
        (["a"], np.full((1, 7), 0.5), {"inputs": "probs"}, "not a probability vector"),
        (["a"], np.array([[np.nan] * 7]), {}, "not finite"),
        (["a"], np.zeros(7), {}, "shape"),
        ([], np.zeros((0, 7)), {}, "nothing to average"),
        (["a"], np.zeros((1, 7)), {"inputs": "softmax"}, "'logits' or 'probs'"),
    ],
)
def test_average_views_rejects_bad_input(ids, scores, kwargs, message):
    with pytest.raises(ScoringError, match=message):
        average_views(ids, scores, **kwargs)


def test_multi_view_pipeline_through_evaluate(metric):
    rng = np.random.default_rng(4)
    clips = [
        f"{scene}/{word}/{i:04d}" for scene in ("Crime", "War", "School") for i, word in enumerate(taxonomy.CLASS_WORDS)
    ]
    labels = {clip: taxonomy.CLASS_WORDS.index(clip.split("/")[1]) for clip in clips}
    view_ids = [clip for clip in clips for _ in range(4)]
    order = rng.permutation(len(view_ids))
    view_ids = [view_ids[i] for i in order]
    logits = rng.normal(size=(len(view_ids), 7))
    ids, probs = average_views(view_ids, logits, views_per_clip=4)
    label_ids, refs = clip_labels(view_ids, [labels[c] for c in view_ids])
    assert label_ids == ids and refs.tolist() == [labels[c] for c in ids]
    result = metric.compute(predictions=probs.argmax(axis=1), references=refs, scenes=scenes_from_clip_ids(ids))
    assert_matches_sklearn(result, probs.argmax(axis=1), refs)
    assert list(result["per_scene"]) == ["Crime", "School", "War"]
    with pytest.raises(ScoringError, match="disagree"):
        clip_labels(["a", "a"], [0, 1])
    with pytest.raises(ScoringError, match="Beach/Angry/0001"):
        scenes_from_clip_ids(["Crime/Angry/0000", "Beach/Angry/0001"])


# ---------------------------------------------------------------- bootstrap


def test_bootstrap_is_seeded_and_brackets_the_point_estimate():
    rng = np.random.default_rng(8)
    preds, refs = random_case(rng, n=400)
    scenes = random_scenes(rng, 400, 5)
    first = score(predictions=preds, references=refs, scenes=scenes, bootstrap=300, seed=1)
    again = score(predictions=preds, references=refs, scenes=scenes, bootstrap=300, seed=1)
    other = score(predictions=preds, references=refs, bootstrap=300, seed=2)
    assert first == again
    assert other["war_ci"] != first["war_ci"] or other["uar_ci"] != first["uar_ci"]
    for entry in [first, *first["per_scene"].values(), *first["per_scenario"].values()]:
        for key in ("war", "uar"):
            low, high = entry[f"{key}_ci"]
            assert 0.0 <= low <= entry[key] <= high <= 1.0
    low, high = first["war_ci"]
    assert 0 < high - low < 0.2  # ~ 4 standard errors of a proportion at n = 400
    assert "war_ci" not in score(predictions=preds, references=refs)


def clip_resampling_rates(preds, refs, resamples, seed):
    """WAR and UAR of resampled clips, drawn clip by clip: the bootstrap as its definition reads."""
    picks = np.random.default_rng(seed).integers(0, len(refs), size=(resamples, len(refs)))
    right = preds[picks] == refs[picks]
    recalls = []
    for label in LABELS:
        of_class = refs[picks] == label
        with np.errstate(invalid="ignore", divide="ignore"):
            recalls.append(np.where(of_class.any(1), (right & of_class).sum(1) / of_class.sum(1), np.nan))
    return right.mean(1), np.nanmean(np.stack(recalls, 1), 1)


def test_bootstrap_has_the_distribution_of_resampling_clips():
    # The cells are drawn as one multinomial per resample; drawing clips one by one must give the same
    # distribution. 20,000 resamples each: the quantiles' Monte Carlo error is ~0.002 here.
    rng = np.random.default_rng(12)
    preds, refs = random_case(rng, n=80, absent=(6,))
    wars, uars = clip_resampling_rates(preds, refs, 20_000, seed=5)
    for confidence in (0.5, 0.9, 0.95):
        ci = bootstrap_ci(predictions=preds, references=refs, resamples=20_000, seed=42, confidence=confidence)
        tail = (1 - confidence) / 2 * 100
        assert ci["war_ci"] == pytest.approx(tuple(np.percentile(wars, [tail, 100 - tail])), abs=0.0126)
        assert ci["uar_ci"] == pytest.approx(tuple(np.percentile(uars, [tail, 100 - tail])), abs=0.0126)
    # and not the distribution of a wrong resample size (half the clips: a visibly wider interval)
    half_wars, _ = clip_resampling_rates(preds[:40], refs[:40], 20_000, seed=5)
    wide = np.percentile(half_wars, [2.5, 97.5])
    ci = bootstrap_ci(predictions=preds, references=refs, resamples=20_000, seed=42)
    assert (ci["war_ci"][1] - ci["war_ci"][0]) < 0.85 * (wide[1] - wide[0])


def test_bootstrap_of_the_full_test_size_is_quick_and_seeded():
    rng = np.random.default_rng(4)
    preds, refs = random_case(rng, n=7847)
    first = bootstrap_ci(predictions=preds, references=refs, resamples=10_000, seed=9)
    assert first == bootstrap_ci(predictions=preds, references=refs, resamples=10_000, seed=9)
    result = score(predictions=preds, references=refs)
    for key in ("war", "uar"):
        low, high = first[f"{key}_ci"]
        assert low <= result[key] <= high and high - low < 0.05


def test_bootstrap_through_evaluate(metric):
    preds, refs = random_case(np.random.default_rng(6), n=80)
    result = metric.compute(predictions=preds, references=refs, bootstrap=100, seed=3)
    assert result["war_ci"] == score(predictions=preds, references=refs, bootstrap=100, seed=3)["war_ci"]


# ---------------------------------------------------------------- figure


def test_plot_confusion_matrix_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    from PIL import Image

    result = score(predictions=[0, 1, 1, 2, 3, 4, 5, 6, 6], references=[0, 1, 2, 2, 3, 4, 5, 5, 0])
    cm = np.array(result["confusion_matrix"])
    cm[6] = 0  # a class without references must not divide by zero
    path = plot_confusion_matrix(cm, result["class_words"], tmp_path / "cm.png", title="test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG" and 500 <= image.width <= 3000 and 500 <= image.height <= 3000
    assert 5_000 < path.stat().st_size < 2_000_000
    with pytest.raises(ScoringError, match="7x7"):
        plot_confusion_matrix(np.zeros((6, 6)), result["class_words"], tmp_path / "bad.png")


# ---------------------------------------------------------------- the module and its packaging


def test_metric_module_uses_one_import_per_line():
    tree = ast.parse((METRIC_DIR / "war_uar.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            assert len(node.names) == 1, f"war_uar.py line {node.lineno}: one import per line for evaluate"


def test_metric_path_and_card_are_beside_each_other():
    assert ferv39k_hf.metrics.WAR_UAR == str(METRIC_DIR / "war_uar.py")
    card = (METRIC_DIR / "README.md").read_text()
    assert card.startswith("---\n") and "UAR over present classes" in card


def test_card_examples_are_right(metric):
    # Blank out the Markdown fences so doctest does not read them as expected output.
    card = re.sub(r"(?m)^```.*$", "", (METRIC_DIR / "README.md").read_text())
    test = doctest.DocTestParser().get_doctest(card, {"war_uar": metric}, "README.md", str(METRIC_DIR), 0)
    assert len(test.examples) >= 5
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    runner.run(test)
    assert runner.failures == 0


def test_evaluate_load_copies_the_module_into_hf_home(metric):
    # conftest points HF_HOME at a fresh temporary folder and turns the Hub off.
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    copies = list((Path(os.environ["HF_HOME"]) / "modules").rglob("war_uar.py"))
    assert copies and all(c.read_text() == (METRIC_DIR / "war_uar.py").read_text() for c in copies)
    assert type(metric).__name__ == "WarUar" and metric.name == "war_uar"


@pytest.mark.slow  # a second `import evaluate` (it pulls in transformers and torch): ~10 s or more
def test_evaluate_load_offline_in_a_fresh_process(tmp_path):
    pytest.importorskip("evaluate")
    script = textwrap.dedent(
        """
        import json
        import evaluate
        import ferv39k_hf
        metric = evaluate.load(ferv39k_hf.metrics.WAR_UAR)
        print(json.dumps(metric.compute(predictions=[0, 1, 2], references=[0, 1, 1], scenes=["War"] * 3)))
        """
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    env.pop("HF_MODULES_CACHE", None)
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["war"] == pytest.approx(2 / 3) and result["per_scenario"]["Anomaly Issues"]["support"] == 3
    copies = list((tmp_path / "hf" / "modules").rglob("war_uar.py"))
    assert copies and copies[0].read_text() == (METRIC_DIR / "war_uar.py").read_text()


@pytest.mark.slow
def test_wheel_ships_the_metric_module_and_card(tmp_path):
    repo = Path(ferv39k_hf.__file__).resolve().parent.parent
    source = tmp_path / "src"
    source.mkdir()
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        if (repo / name).exists():
            (source / name).write_bytes((repo / name).read_bytes())
        else:
            (source / name).write_text("placeholder\n")
    subprocess.run(["cp", "-r", str(repo / "ferv39k_hf"), str(source)], check=True)
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "-w", str(tmp_path / "dist"), str(source)],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    import zipfile

    (wheel,) = (tmp_path / "dist").glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"ferv39k_hf/metrics/war_uar/war_uar.py", "ferv39k_hf/metrics/war_uar/README.md",
            "ferv39k_hf/metrics/scoring.py"} <= names
