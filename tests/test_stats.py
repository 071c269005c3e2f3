"""Bootstrap intervals: unit sums reproduce each scorer's point estimate; known-answer interval widths."""

import math

import numpy as np
import pytest

from povid_eval.benches.chair import scorer as chair
from povid_eval.benches.mme import files as mme_files
from povid_eval.benches.pope import files as pope_files
from povid_eval.core import stats


def test_binomial_proportion_matches_normal_approximation():
    rng = np.random.default_rng(1)
    x = (rng.random(500) < 0.3).astype(float)[:, None]
    p = x.mean()
    lo, hi = stats.bootstrap_intervals(x, lambda s: {"p": s[..., 0] / 500}, seed=0)["p"]
    half = 1.96 * math.sqrt(p * (1 - p) / 500)
    assert lo == pytest.approx(p - half, abs=0.006) and hi == pytest.approx(p + half, abs=0.006)


def test_resampling_is_seeded_and_vectorised():
    a = stats.resample_counts(500, 10_000, seed=3)
    assert a.shape == (10_000, 500) and (a.sum(axis=1) == 500).all()
    assert (a == stats.resample_counts(500, 10_000, seed=3)).all()


def _point(result):
    matrix, from_sums = result["units"]
    return {k: float(v) for k, v in from_sums(matrix.sum(axis=0)).items()}


def test_units_reproduce_point_estimates(fixtures):
    p = fixtures / "pope"
    pope_result = pope_files.pope_from_files(
        p / "llava-v1.5-13b_answers.jsonl", p / "llava_pope_test.jsonl", p, with_units=True
    )
    point = _point(pope_result)
    assert point["mean_f1"] == pope_result["metrics"]["mean_f1"]
    assert point["adversarial.precision"] == pope_result["metrics"]["adversarial"]["precision"]
    m = fixtures / "mme"
    mme_result = mme_files.mme_from_llava(m / "llava-v1.5-13b" / "answers.jsonl", m / "ground_truth", with_units=True)
    point = _point(mme_result)
    assert point["perception"] == pytest.approx(mme_result["metrics"]["perception"], abs=1e-9)
    assert point["cognition"] == pytest.approx(mme_result["metrics"]["cognition"], abs=1e-9)
    intervals = stats.bootstrap_intervals(*mme_result["units"], n_resamples=2000)
    lo, hi = intervals["perception"]
    assert lo < mme_result["metrics"]["perception"] < hi


# ------------------------------------------------------------------------------ comparing two models (issue 5)


def _proportion(s):
    return {"p": stats.ratio(s[..., 0], s[..., 1])}


def _bernoulli_units(correct):
    """One question per unit: columns (correct, questions)."""
    correct = np.asarray(correct, dtype=float)
    return np.column_stack([correct, np.ones_like(correct)])


def test_paired_bootstrap_matches_normal_approximation_of_the_difference():
    rng = np.random.default_rng(2)
    xa, xb = rng.random(500) < 0.3, rng.random(500) < 0.4
    res = stats.paired_bootstrap(_bernoulli_units(xa), _bernoulli_units(xb), _proportion, seed=1)["p"]
    d = xb.astype(float) - xa
    assert res["a"] == xa.mean() and res["b"] == xb.mean() and res["delta"] == pytest.approx(d.mean())
    half = 1.96 * d.std() / math.sqrt(500)  # normal approximation of a paired mean difference
    lo, hi = res["ci"]
    assert hi - lo == pytest.approx(2 * half, rel=0.10)
    assert (lo + hi) / 2 == pytest.approx(d.mean(), abs=0.01)
    assert 0 < res["p"] < 1


def test_paired_bootstrap_identical_models_give_zero_and_p_one():
    rng = np.random.default_rng(3)
    units = rng.integers(0, 4, size=(200, 8)).astype(float)
    out = stats.paired_bootstrap(units, units.copy(), chair.from_sums, n_resamples=2000)
    assert set(out) == set(chair.from_sums(units.sum(0)))
    for res in out.values():
        assert res["delta"] == 0 and res["a"] == res["b"] and res["ci"] == [0.0, 0.0] and res["p"] == 1.0


def test_paired_bootstrap_clear_difference_has_small_p():
    rng = np.random.default_rng(4)
    xa, xb = rng.random(300) < 0.2, rng.random(300) < 0.6
    res = stats.paired_bootstrap(_bernoulli_units(xa), _bernoulli_units(xb), _proportion, n_resamples=2000)["p"]
    assert res["ci"][0] > 0
    assert res["p"] == pytest.approx(2 / 2001)  # the smallest p the +1 correction allows
    flipped = stats.paired_bootstrap(_bernoulli_units(xb), _bernoulli_units(xa), _proportion, n_resamples=2000)["p"]
    assert flipped["delta"] == -res["delta"] and flipped["p"] == res["p"] and flipped["ci"][1] < 0


def test_pairing_narrows_the_interval_of_correlated_models():
    rng = np.random.default_rng(5)
    xa = rng.random(400) < 0.5
    xb = xa ^ (rng.random(400) < 0.08)  # B agrees with A on ~92% of the questions
    a, b = _bernoulli_units(xa), _bernoulli_units(xb)
    paired = stats.paired_bootstrap(a, b, _proportion, n_resamples=2000)["p"]["ci"]
    unpaired = stats.paired_bootstrap(a, b[rng.permutation(400)], _proportion, n_resamples=2000)["p"]["ci"]
    assert paired[1] - paired[0] < 0.5 * (unpaired[1] - unpaired[0])


def test_paired_bootstrap_applies_one_count_matrix_to_both_models():
    rng = np.random.default_rng(6)
    a, b = rng.integers(0, 3, size=(50, 2)).astype(float), rng.integers(0, 3, size=(50, 2)).astype(float)
    a[:, 1] += 3
    b[:, 1] += 3
    counts = stats.resample_counts(50, 500, seed=7)
    res = stats.paired_bootstrap(a, b, _proportion, counts=counts)["p"]
    delta = _proportion(counts @ b)["p"] - _proportion(counts @ a)["p"]
    assert res["ci"] == [float(np.quantile(delta, 0.025)), float(np.quantile(delta, 0.975))]
    assert res["p"] == min(1.0, 2 * min(1 + (delta <= 0).sum(), 1 + (delta >= 0).sum()) / 501)
    with pytest.raises(ValueError):
        stats.paired_bootstrap(a, b[:-1], _proportion)


def test_mcnemar_hand_computed_values():
    # exact: 2 * P(X <= 2), X ~ Bin(12, 1/2) = 2 * (1 + 12 + 66) / 4096
    assert stats.mcnemar(10, 2) == pytest.approx(158 / 4096, rel=1e-12)
    assert stats.mcnemar(2, 10) == stats.mcnemar(10, 2)
    # chi-square with continuity correction: (|30 - 10| - 1)^2 / 40 = 9.025, P(chi2_1 > 9.025) = 0.0026631
    assert stats.mcnemar(30, 10) == pytest.approx(0.0026631, abs=1e-7)
    assert stats.mcnemar(30, 10, exact=True) == pytest.approx(0.0022, abs=1e-4)  # 2 * P(Bin(40, .5) <= 10)
    assert stats.mcnemar(10, 2, exact=False) == pytest.approx(math.erfc(math.sqrt(49 / 12 / 2)))


def test_mcnemar_symmetric_and_empty_give_one():
    assert stats.mcnemar(0, 0) == 1.0
    assert stats.mcnemar(5, 5) == 1.0 and stats.mcnemar(40, 40) == 1.0 and stats.mcnemar(40, 41) == 1.0
    assert stats.mcnemar(7, 6) == 1.0  # 2 * P(Bin(13, .5) <= 6) = 1 exactly
    with pytest.raises(ValueError):
        stats.mcnemar(-1, 3)


def test_discordant_counts():
    a = [True, True, False, False, True, False]
    b = [True, False, True, False, False, True]
    assert stats.discordant(a, b) == (2, 2)
    assert stats.discordant(np.array(a), np.ones(6, dtype=bool)) == (0, 3)
    with pytest.raises(ValueError):
        stats.discordant(a, b[:-1])


def test_holm_textbook_example():
    adjusted, significant = stats.holm([0.01, 0.04, 0.03, 0.005])
    assert adjusted == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert significant == [True, False, False, True]
    adjusted, significant = stats.holm({"pope": 0.01, "chair": 0.04, "mme": 0.03, "mmhal": 0.005}, alpha=0.025)
    assert list(adjusted) == ["pope", "chair", "mme", "mmhal"]
    assert adjusted == pytest.approx({"pope": 0.03, "chair": 0.06, "mme": 0.06, "mmhal": 0.02})
    assert significant == {"pope": False, "chair": False, "mme": False, "mmhal": True}
    assert stats.holm([0.5, 0.9])[0] == [1.0, 1.0]  # capped at 1
    assert stats.holm([]) == ([], [])
