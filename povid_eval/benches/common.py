"""Small pieces shared by the bench scorers."""

from __future__ import annotations

import numpy as np


def ratio(a, b):
    """a / b for floats or arrays, 0.0 where b == 0 (an undefined ratio is reported as 0, not an error).

    Plain float division where b != 0, so point estimates equal the reference implementations bit for bit.
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return np.divide(a, b, out=np.zeros(np.broadcast(a, b).shape), where=b != 0)


def as_floats(metrics: dict) -> dict:
    """numpy 0-d values -> Python floats (for point estimates and JSON)."""
    return {k: float(v) for k, v in metrics.items()}
