"""Paired comparison of two models: significance where there is a difference, none where there is not.

The p-values and intervals are checked against their definitions (a clip-by-clip
paired bootstrap, McNemar's exact binomial test, scipy where installed), not
against numbers this code produced.
"""

import math

import numpy as np
import pytest

from ferv39k_hf.metrics import Comparison, ScoringError, compare, mcnemar_exact, score


def model(rng, refs, skill):
    """Predictions right with probability `skill`, else a uniformly random class."""
    return np.where(rng.random(len(refs)) < skill, refs, rng.integers(0, 7, size=len(refs)))


def skewed_references(rng, n):
    return rng.choice(7, size=n, p=[0.19, 0.06, 0.055, 0.19, 0.25, 0.18, 0.075])


def test_a_clearly_better_model_is_significant():
    rng = np.random.default_rng(1)
    refs = skewed_references(rng, 300)
    better, worse = model(rng, refs, 0.65), model(rng, refs, 0.40)
    result = compare(predictions_a=better, predictions_b=worse, references=refs)
    assert isinstance(result, Comparison)
    assert result.war_p < 0.05 and result.uar_p < 0.05 and result.mcnemar_p < 0.05
    assert result.war_diff_ci[0] > 0 and result.uar_diff_ci[0] > 0  # the intervals exclude "no difference"
    assert result.war_diff == pytest.approx(score(predictions=better, references=refs)["war"]
                                            - score(predictions=worse, references=refs)["war"])
    assert result.uar_diff == pytest.approx(score(predictions=better, references=refs)["uar"]
                                            - score(predictions=worse, references=refs)["uar"])
    # the other way round: the same evidence, the sign flipped
    reverse = compare(predictions_a=worse, predictions_b=better, references=refs)
    assert reverse.war_diff == pytest.approx(-result.war_diff) and reverse.war_diff_ci[1] < 0
    assert reverse.mcnemar_p == result.mcnemar_p and (reverse.a_only, reverse.b_only) == (result.b_only, result.a_only)


def test_a_model_against_itself_is_not_significant():
    rng = np.random.default_rng(2)
    refs = skewed_references(rng, 400)
    preds = model(rng, refs, 0.5)
    result = compare(predictions_a=preds, predictions_b=preds.tolist(), references=refs)
    assert result.war_p >= 0.5 and result.uar_p >= 0.5
    assert result.mcnemar_p == 1.0 and result.a_only == result.b_only == 0
    assert result.war_diff == 0 and result.war_diff_ci == (0.0, 0.0) and result.uar_diff_ci == (0.0, 0.0)


def test_two_equally_good_models_are_usually_not_significant():
    # Same skill, independent errors: the permutation test's p-value is uniform under the null,
    # so about 5% of pairs fall below 0.05 (out of 40, more than 8 has probability < 0.001).
    rng = np.random.default_rng(3)
    significant = 0
    for _ in range(40):
        refs = skewed_references(rng, 300)
        result = compare(predictions_a=model(rng, refs, 0.5), predictions_b=model(rng, refs, 0.5),
                         references=refs, resamples=2000, seed=int(rng.integers(1 << 30)))
        significant += result.war_p < 0.05
    assert significant <= 8


def test_intervals_contain_the_estimate():
    rng = np.random.default_rng(4)
    for _ in range(20):
        n = int(rng.integers(50, 600))
        refs = skewed_references(rng, n)
        result = compare(predictions_a=model(rng, refs, rng.random()), predictions_b=model(rng, refs, rng.random()),
                         references=refs, resamples=2000, seed=int(rng.integers(1 << 30)))
        for key in ("war", "uar"):
            low, high = getattr(result, f"{key}_diff_ci")
            assert low <= getattr(result, f"{key}_diff") <= high
            assert 0 < getattr(result, f"{key}_p") <= 1


def test_paired_bootstrap_has_the_distribution_of_resampling_clip_pairs():
    # Definition: resample clips with replacement and score both models on the same resample.
    rng = np.random.default_rng(5)
    refs = skewed_references(rng, 120)
    preds_a = model(rng, refs, 0.6)
    preds_b = np.where(rng.random(120) < 0.2, model(rng, refs, 0.5), preds_a)  # B: A changed on ~20% of clips
    picks = np.random.default_rng(6).integers(0, 120, size=(20_000, 120))
    diffs = ((preds_a[picks] == refs[picks]).mean(1) - (preds_b[picks] == refs[picks]).mean(1))
    result = compare(predictions_a=preds_a, predictions_b=preds_b, references=refs, resamples=20_000, seed=7)
    assert result.war_diff_ci == pytest.approx(tuple(np.percentile(diffs, [2.5, 97.5])), abs=0.011)
    # unpaired resampling (each model on its own resample) gives a much wider interval for such
    # correlated models: pairing matters
    other = np.random.default_rng(8).integers(0, 120, size=(20_000, 120))
    unpaired = (preds_a[picks] == refs[picks]).mean(1) - (preds_b[other] == refs[other]).mean(1)
    paired_width = result.war_diff_ci[1] - result.war_diff_ci[0]
    assert paired_width < 0.6 * np.subtract(*np.percentile(unpaired, [97.5, 2.5]))


def test_permutation_p_for_war_agrees_with_mcnemar():
    # For WAR the exact permutation distribution is McNemar's binomial: the Monte Carlo p must be close.
    rng = np.random.default_rng(9)
    refs = skewed_references(rng, 500)
    for skill_b in (0.55, 0.5, 0.45):
        result = compare(predictions_a=model(rng, refs, 0.55), predictions_b=model(rng, refs, skill_b),
                         references=refs, resamples=20_000, seed=1)
        assert result.war_p == pytest.approx(result.mcnemar_p, abs=0.015)


def hand_mcnemar(a_only, b_only):
    n, k = a_only + b_only, min(a_only, b_only)
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n) if n else 1.0


@pytest.mark.parametrize("a_only, b_only, expected", [(1, 5, 14 / 64), (5, 1, 14 / 64), (0, 0, 1.0), (3, 3, 1.0),
                                                      (0, 1, 1.0), (0, 6, 2 / 64), (10, 30, None), (400, 520, None)])
def test_mcnemar_exact_is_the_two_sided_binomial_test(a_only, b_only, expected):
    p = mcnemar_exact(a_only, b_only)
    assert p == pytest.approx(hand_mcnemar(a_only, b_only), rel=1e-12)
    if expected is not None:
        assert p == pytest.approx(expected, rel=1e-12)
    try:
        from scipy.stats import binomtest
    except ImportError:
        return
    if a_only + b_only:
        assert p == pytest.approx(binomtest(min(a_only, b_only), a_only + b_only, 0.5).pvalue, rel=1e-9)


def test_mcnemar_on_the_full_test_size_does_not_underflow():
    # 7,847 clips with 3,000 discordant ones: 2**3000 has no float, the exact integers handle it
    p = mcnemar_exact(1400, 1600)
    assert 0 < p < 0.001
    scipy_stats = pytest.importorskip("scipy.stats")
    assert p == pytest.approx(scipy_stats.binomtest(1400, 3000, 0.5).pvalue, rel=1e-6)


def test_compare_counts_discordant_clips():
    refs = [0, 1, 2, 3, 4, 5, 6, 0]
    a = [0, 1, 2, 3, 0, 0, 0, 1]  # right on the first 4
    b = [0, 0, 2, 0, 4, 0, 6, 1]  # right on 0, 2, 4, 6
    result = compare(predictions_a=a, predictions_b=b, references=refs, resamples=100)
    assert (result.a_only, result.b_only) == (2, 2) and result.mcnemar_p == 1.0
    assert result.to_dict()["war_diff_ci"] == list(result.war_diff_ci)


@pytest.mark.parametrize("kwargs, message", [
    (dict(predictions_a=[0, 1], predictions_b=[0], references=[0, 1]), "pair up"),
    (dict(predictions_a=[0, 9], predictions_b=[0, 1], references=[0, 1]), "not a class id"),
    (dict(predictions_a=[0, 1], predictions_b=[0, 1], references=[0, 1], resamples=0), "positive integer"),
    (dict(predictions_a=[0, 1], predictions_b=[0, 1], references=[0, 1], confidence=1.5), "confidence"),
])
def test_bad_compare_input_is_an_error(kwargs, message):
    with pytest.raises(ScoringError, match=message):
        compare(**kwargs)


def test_compare_through_the_evaluate_metric():
    evaluate = pytest.importorskip("evaluate")
    from ferv39k_hf.metrics import WAR_UAR

    rng = np.random.default_rng(10)
    refs = skewed_references(rng, 200)
    a, b = model(rng, refs, 0.7), model(rng, refs, 0.3)
    metric = evaluate.load(WAR_UAR)
    result = metric.compare(predictions_a=a, predictions_b=b, references=refs, seed=3)
    assert result == compare(predictions_a=a, predictions_b=b, references=refs, seed=3).to_dict()
    assert result["war_p"] < 0.05


def test_bench_bootstrap_smoke_run(capsys):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "bench" / "bootstrap.py"
    spec = importlib.util.spec_from_file_location("bench_bootstrap", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--clips", "300", "--resamples", "400", "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    assert "1.00x" in out and out.count("faster") == 2
    # the baseline is the bootstrap by definition: its interval agrees with bootstrap_ci within Monte Carlo error
    rng = np.random.default_rng(0)
    refs = skewed_references(rng, 500)
    preds = model(rng, refs, 0.5)
    war_ci, uar_ci = bench.clip_by_clip(preds, refs, 20_000, seed=1)
    from ferv39k_hf.metrics import bootstrap_ci

    ci = bootstrap_ci(predictions=preds, references=refs, resamples=20_000, seed=2)
    assert ci["war_ci"] == pytest.approx(tuple(war_ci), abs=0.006)
    assert ci["uar_ci"] == pytest.approx(tuple(uar_ci), abs=0.008)
