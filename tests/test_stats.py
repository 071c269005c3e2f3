"""Bootstrap intervals: unit sums reproduce each scorer's point estimate; known-answer interval widths."""

import math

import numpy as np
import pytest

from povid_eval import score
from povid_eval.report import stats


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
    pope_result = score.pope_from_files(p / "llava-v1.5-13b_answers.jsonl", p / "llava_pope_test.jsonl", p,
                                        with_units=True)
    point = _point(pope_result)
    assert point["mean_f1"] == pope_result["metrics"]["mean_f1"]
    assert point["adversarial.precision"] == pope_result["metrics"]["adversarial"]["precision"]
    m = fixtures / "mme"
    mme_result = score.mme_from_llava(m / "llava-v1.5-13b" / "answers.jsonl", m / "ground_truth", with_units=True)
    point = _point(mme_result)
    assert point["perception"] == pytest.approx(mme_result["metrics"]["perception"], abs=1e-9)
    assert point["cognition"] == pytest.approx(mme_result["metrics"]["cognition"], abs=1e-9)
    intervals = stats.bootstrap_intervals(*mme_result["units"], n_resamples=2000)
    lo, hi = intervals["perception"]
    assert lo < mme_result["metrics"]["perception"] < hi
