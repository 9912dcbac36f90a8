"""WAR/UAR metric: multi-view averaging, the bootstrap, the figure, and the evaluate module as shipped."""

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
from test_metrics import (  # noqa: F401  (helpers and the metric fixture of test_metrics)
    LABELS,
    METRIC_DIR,
    assert_matches_sklearn,
    metric,
    random_case,
    random_scenes,
)

import ferv39k_hf
from ferv39k_hf import taxonomy
from ferv39k_hf.metrics import (
    ScoringError,
    average_views,
    bootstrap_ci,
    clip_labels,
    plot_confusion_matrix,
    scenes_from_clip_ids,
    score,
)

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:sklearn")

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
