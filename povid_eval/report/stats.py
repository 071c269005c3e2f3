"""Cluster bootstrap intervals for benchmark metrics.

Every metric of the four benches is a function of sums of per-unit statistics (a unit = an image, or an
image pair for MME, a question for MMHal): e.g. CHAIRi = sum(hallucinated mentions) / sum(mentions). A
bootstrap resample draws n units with replacement (Efron & Tibshirani 1993); its metric is the function of
the resampled sums. Drawing is done once as a (B, n) matrix of multinomial counts, so the B resampled sums
are one matrix product, and the same counts serve two models for a paired comparison.

    interval = [q_(alpha/2), q_(1 - alpha/2)] of the B resampled metrics   (percentile method, alpha = 0.05)
"""

from __future__ import annotations

from typing import Callable

import numpy as np

FromSums = Callable[[np.ndarray], dict[str, np.ndarray]]


def resample_counts(n_units: int, n_resamples: int = 10_000, seed: int = 0) -> np.ndarray:
    """(n_resamples, n_units) counts: how often each unit is drawn in each resample (each row sums to n)."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_units, np.full(n_units, 1.0 / n_units), size=n_resamples)


def bootstrap_intervals(units: np.ndarray, from_sums: FromSums, *, n_resamples: int = 10_000, seed: int = 0,
                        level: float = 0.95, counts: np.ndarray | None = None) -> dict[str, list[float]]:
    """Percentile intervals of every metric from_sums() returns, over a cluster bootstrap of the unit rows."""
    units = np.asarray(units, dtype=float)
    if counts is None:
        counts = resample_counts(len(units), n_resamples, seed)
    resampled = from_sums(counts @ units)
    alpha = (1 - level) / 2
    return {name: [float(np.quantile(v, alpha)), float(np.quantile(v, 1 - alpha))] for name, v in resampled.items()}


def ratio(a, b):
    """a / b elementwise, 0.0 where b == 0 (the benches report an undefined ratio as 0)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return np.divide(a, b, out=np.zeros(np.broadcast(a, b).shape), where=b != 0)
