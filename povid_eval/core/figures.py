"""Drawing helpers for every figure (report/plots.py and the benches' own figures): fixed rc, sizes and
fonts, an Agg canvas without pyplot state, PNG without metadata written atomically, so a figure's bytes
are the same on every run; metric values and their 95% intervals read from a loaded metrics.json (nested
metrics are named with dots, e.g. ``random.f1``, ``subtasks.color.score``)."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from povid_eval.core.errors import InputError
from povid_eval.core.io import atomic_write_bytes

DPI = 100
RC = {
    "svg.hashsalt": "povid-eval",
    "font.family": "DejaVu Sans",
    "font.size": 9,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.axisbelow": True,
}


def value(data: dict, key: str, *, required: bool = True) -> float:
    """Metric ``key`` ('CHAIRi', 'random.f1', 'subtasks.color.score') of a loaded metrics.json; NaN if absent
    and not required."""
    node = data["metrics"]
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            if required:
                raise InputError(data.get("_path"), "missing", field=f"metrics.{key}")
            return math.nan
        node = node[part]
    if not isinstance(node, (int, float)) or isinstance(node, bool):
        raise InputError(data.get("_path"), f"not a number: {node!r}", field=f"metrics.{key}")
    return float(node)


def interval(data: dict, key: str) -> tuple[float, float]:
    iv = data.get("intervals", {}).get(key)
    if isinstance(iv, (list, tuple)) and len(iv) == 2 and all(isinstance(x, (int, float)) for x in iv):
        return float(iv[0]), float(iv[1])
    return math.nan, math.nan


def err(v: float, iv: tuple[float, float]) -> tuple[float, float]:
    """Distances below/above v for an error bar (0 where unknown; clamped non-negative)."""
    lo, hi = iv
    if math.isnan(v) or math.isnan(lo) or math.isnan(hi):
        return 0.0, 0.0
    return max(v - lo, 0.0), max(hi - v, 0.0)


# ---------------------------------------------------------------- drawing


def figure(w: float, h: float) -> Figure:
    fig = Figure(figsize=(w, h), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def color(i: int):
    return matplotlib.colormaps["tab10"](i % 10)


def save(fig: Figure, out_dir: str | Path, name: str) -> Path:
    """The figure as PNG (no metadata: same bytes every run), written atomically to out_dir/name."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    target = Path(out_dir) / name
    atomic_write_bytes(target, buf.getvalue())
    return target


def grouped_bars(ax, groups: Sequence[str], models: Sequence[str], vals, errs) -> None:
    """vals[m][g], errs[m][g] = (below, above); bars per model within each group."""
    n = max(len(models), 1)
    width = 0.8 / n
    for i, m in enumerate(models):
        xs = [g + (i - (n - 1) / 2) * width for g in range(len(groups))]
        lo = [e[0] for e in errs[i]]
        hi = [e[1] for e in errs[i]]
        ax.bar(
            xs,
            vals[i],
            width,
            yerr=[lo, hi],
            capsize=3,
            color=color(i),
            label=m,
            error_kw={"elinewidth": 1, "ecolor": "black"},
        )
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups)


def series(data: dict, models: Sequence[str], keys: Sequence[str]) -> tuple[list, list]:
    """Bar heights (0 where a model lacks the metric) and whisker lengths per model, for ``keys``."""
    vals, errs = [], []
    for m in models:
        v = [value(data[m], k, required=False) for k in keys]
        errs.append([err(x, interval(data[m], k)) for x, k in zip(v, keys)])
        vals.append([0.0 if math.isnan(x) else x for x in v])
    return vals, errs
