"""Statistics for benchmark metrics: cluster bootstrap intervals, paired model comparison, McNemar, Holm.

Every metric of the four benches is a function of sums of per-unit statistics (a unit = an image, or an
image pair for MME, a question for MMHal): e.g. CHAIRi = sum(hallucinated mentions) / sum(mentions). A
bootstrap resample draws n units with replacement (Efron & Tibshirani 1993); its metric is the function of
the resampled sums. Drawing is done once as a (B, n) matrix of multinomial counts C, so the B resampled sums
are one matrix product C @ U, and the same counts serve two models for a paired comparison.

    interval = [q_(alpha/2), q_(1 - alpha/2)] of the B resampled metrics   (percentile method, alpha = 0.05)

Comparing model A with model B on the same bench (units aligned row by row: row i is the same image for both):

    paired_bootstrap   delta* = f(C @ U_b) - f(C @ U_a) with ONE count matrix C for both models, so every
                       resample keeps an image's questions together (clustered) and the same images for both
                       models (paired); percentile interval of delta*, and the two-sided bootstrap p-value
                       p = min(1, 2 min((1 + #{delta* <= 0}) / (B + 1), (1 + #{delta* >= 0}) / (B + 1)))
    mcnemar            two-sided McNemar (1947) test on the discordant counts b (A right, B wrong) and
                       c (A wrong, B right): exact binomial when b + c < 25, else chi-square with Edwards' (1948)
                       continuity correction  X2 = (max(0, |b - c| - 1))^2 / (b + c),  1 dof
    holm               Holm (1979) step-down adjustment of the p-values of several metrics / benches
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import numpy as np

FromSums = Callable[[np.ndarray], dict[str, np.ndarray]]


@functools.lru_cache(maxsize=8)
def resample_counts(n_units: int, n_resamples: int = 10_000, seed: int = 0) -> np.ndarray:
    """(n_resamples, n_units) counts: how often each unit is drawn in each resample (each row sums to n).
    A pure function of its arguments, kept for the next caller (a report draws the same matrix for every
    metric of a bench; read-only, so no caller can change it for the others)."""
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n_units, np.full(n_units, 1.0 / n_units), size=n_resamples)
    counts.setflags(write=False)
    return counts


def bootstrap_intervals(
    units: np.ndarray,
    from_sums: FromSums,
    *,
    n_resamples: int = 10_000,
    seed: int = 0,
    level: float = 0.95,
    counts: np.ndarray | None = None,
) -> dict[str, list[float]]:
    """Percentile intervals of every metric from_sums() returns, over a cluster bootstrap of the unit rows."""
    units = np.asarray(units, dtype=float)
    if counts is None:
        counts = resample_counts(len(units), n_resamples, seed)
    resampled = from_sums(counts @ units)
    alpha = (1 - level) / 2
    return {name: [float(np.quantile(v, alpha)), float(np.quantile(v, 1 - alpha))] for name, v in resampled.items()}


def paired_bootstrap(
    units_a: np.ndarray,
    units_b: np.ndarray,
    from_sums: FromSums,
    *,
    n_resamples: int = 10_000,
    seed: int = 0,
    level: float = 0.95,
    counts: np.ndarray | None = None,
) -> dict[str, dict]:
    """Paired, clustered bootstrap of metric differences between model A and model B on the same units.

    units_a, units_b: (n, k) unit rows aligned row by row (row i = the same image / image pair / question for
    both models), with the one ``from_sums`` that maps summed rows to metrics. One (B, n) count matrix C is
    drawn (resample_counts) and applied to both, so resample r scores both models on the same multiset of
    units, each unit carrying all its questions (Efron & Tibshirani 1993, ch. 13 for the percentile interval;
    Davison & Hinkley 1997, ch. 3 on resampling the clusters of hierarchical data). For every metric name m:

        a, b   = f_m(sum_i U_a[i]), f_m(sum_i U_b[i])                 (the point estimates)
        delta  = b - a
        delta* = f_m(C @ U_b) - f_m(C @ U_a)                          (B resampled differences)
        ci     = [q_(alpha/2), q_(1 - alpha/2)] of delta*,  alpha = 1 - level   (percentile interval)
        p      = min(1, 2 min(below, above)),   below = (1 + #{delta* <= 0}) / (B + 1),
                                                  above = (1 + #{delta* >= 0}) / (B + 1)

    p is the two-sided achieved significance level of the percentile interval (the smallest 1 - level whose
    interval excludes 0; Efron & Tibshirani 1993, ch. 15-16) with the Monte Carlo +1 correction
    (1 + r) / (B + 1) of Davison & Hinkley 1997, ch. 4 (tests), so p >= 2 / (B + 1) and never 0. Ties delta* = 0
    count on both sides (conservative): identical models give delta* = 0 throughout and p = 1.

    Returns {metric: {"a": float, "b": float, "delta": float, "ci": [lo, hi], "p": float}}.
    """
    units_a, units_b = np.asarray(units_a, dtype=float), np.asarray(units_b, dtype=float)
    if units_a.ndim != 2 or units_a.shape != units_b.shape:
        raise ValueError(f"paired units must be aligned (n, k) matrices, got {units_a.shape} and {units_b.shape}")
    n, k = units_a.shape
    if counts is None:
        counts = resample_counts(n, n_resamples, seed)
    if counts.shape[1] != n:
        raise ValueError(f"counts have {counts.shape[1]} columns for {n} units")
    sums = np.asarray(counts, dtype=float) @ np.hstack([units_a, units_b])  # one product for both models
    star_a, star_b = from_sums(sums[:, :k]), from_sums(sums[:, k:])
    point_a, point_b = from_sums(units_a.sum(axis=0)), from_sums(units_b.sum(axis=0))
    return {
        name: delta_summary(
            float(point_a[name]),
            float(point_b[name]),
            np.asarray(star_b[name], dtype=float) - np.asarray(star_a[name], dtype=float),
            level,
        )
        for name in star_a
    }


def delta_summary(a: float, b: float, delta_star: np.ndarray, level: float = 0.95) -> dict:
    """{a, b, delta = b - a, ci, p} from the resampled deltas (percentile interval; p as in paired_bootstrap)."""
    delta_star = np.asarray(delta_star, dtype=float)
    alpha = (1 - level) / 2
    below = (1 + int(np.count_nonzero(delta_star <= 0))) / (len(delta_star) + 1)
    above = (1 + int(np.count_nonzero(delta_star >= 0))) / (len(delta_star) + 1)
    return {
        "a": a,
        "b": b,
        "delta": b - a,
        "ci": [float(np.quantile(delta_star, alpha)), float(np.quantile(delta_star, 1 - alpha))],
        "p": min(1.0, 2 * min(below, above)),
    }


def discordant(correct_a, correct_b) -> tuple[int, int]:
    """McNemar's discordant counts from aligned per-question correctness: (b, c) = (#A right & B wrong,
    #A wrong & B right)."""
    a, b = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"correctness arrays must be aligned, got shapes {a.shape} and {b.shape}")
    return int(np.count_nonzero(a & ~b)), int(np.count_nonzero(~a & b))


def _binom_half_cdf(m: int, n: int) -> float:
    """P(X <= m) for X ~ Binomial(n, 1/2) = sum_{k <= m} C(n, k) / 2^n, in exact integers (one rounding)."""
    total, term = 0, 1
    for k in range(m + 1):  # term = C(n, k), by C(n, k + 1) = C(n, k) (n - k) / (k + 1)
        total += term
        term = term * (n - k) // (k + 1)
    return total / 2**n  # int / int is correctly rounded in Python, whatever the size


def mcnemar(b: int, c: int, exact: bool | None = None) -> float:
    """Two-sided p-value of McNemar's (1947) test on the discordant counts b (A right, B wrong), c (A wrong, B right).

    Under H0 (both models equally accurate on these questions) b ~ Binomial(b + c, 1/2) given b + c.

        exact (default when b + c < 25):  p = min(1, 2 P(X <= min(b, c))),  X ~ Binomial(b + c, 1/2)
        else, chi-square with Edwards' (1948) continuity correction:
                  X2 = max(0, |b - c| - 1)^2 / (b + c),   p = P(chi2_1 > X2) = erfc(sqrt(X2 / 2))

    The correction is clamped at 0 (it never exceeds |b - c|), so b == c gives p = 1 on either path;
    b + c == 0 (no discordant pairs) gives p = 1. ``exact`` True / False forces a path (the exact sum is in
    integers: milliseconds for b + c in the thousands, about a second near 10^5).
    """
    b, c = int(b), int(c)
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be >= 0, got b={b}, c={c}")
    n = b + c
    if n == 0:
        return 1.0
    if exact if exact is not None else n < 25:
        return min(1.0, 2 * _binom_half_cdf(min(b, c), n))
    x2 = max(0, abs(b - c) - 1) ** 2 / n
    return math.erfc(math.sqrt(x2 / 2))


def holm(pvalues: dict[str, float] | list[float], alpha: float = 0.05):
    """Holm (1979) step-down adjustment for m tests (controls the family-wise error rate at alpha).

    With p_(1) <= ... <= p_(m) sorted ascending:

        p_adj_(i) = max_{j <= i} min(1, (m - j + 1) p_(j))        significant_(i) = p_adj_(i) <= alpha

    (equivalent to rejecting H_(1..i) while p_(j) <= alpha / (m - j + 1)). Returns (adjusted, significant)
    in the input's form: dicts with the input's keys, or lists in the input's order.
    """
    keys = list(pvalues) if isinstance(pvalues, dict) else None
    p = np.asarray(list(pvalues.values()) if keys is not None else list(pvalues), dtype=float)
    m = len(p)
    order = np.argsort(p, kind="stable")
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    adjusted = np.empty(m)
    adjusted[order] = np.maximum.accumulate(scaled) if m else scaled
    significant = adjusted <= alpha
    if keys is not None:
        return ({k: float(v) for k, v in zip(keys, adjusted)}, {k: bool(s) for k, s in zip(keys, significant)})
    return [float(v) for v in adjusted], [bool(s) for s in significant]


def ratio(a, b):
    """a / b elementwise, 0.0 where b == 0 (the benches report an undefined ratio as 0)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return np.divide(a, b, out=np.zeros(np.broadcast(a, b).shape), where=b != 0)
