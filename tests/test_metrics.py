"""WAR/UAR metric: numbers against scikit-learn, per-scene breakdowns, errors, views, bootstrap, figure.

Every number is checked against scikit-learn (or against the metric computed
on the matching subset), through the numpy core and through
``evaluate.load(ferv39k_hf.metrics.WAR_UAR)`` offline.
"""

from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, balanced_accuracy_score, recall_score
from sklearn.metrics import confusion_matrix as sk_confusion_matrix

from ferv39k_hf import taxonomy
from ferv39k_hf.metrics import (
    WAR_UAR,
    ScoringError,
    confusion_matrix,
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
