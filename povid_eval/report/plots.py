"""PNG plots over result files (results/<model>/<bench>/metrics.json, results/<model>/frontier.json).

Reads result files only (never the model). Every function takes model names, the results folder and an output
folder, writes one PNG there atomically (temp file in the same folder, then ``os.replace``) and returns its path.
Files are byte-identical across runs: Agg canvas without pyplot state, fixed size/dpi/fonts, no PNG metadata.
Whiskers/error bars are the 95% bootstrap intervals stored under ``"intervals"`` (nested metrics are named with
dots there, e.g. ``random.f1``, ``subtasks.color.score``); a metric without an interval is drawn without one.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Sequence

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from povid_eval.core.errors import InputError
from povid_eval.core.io import atomic_write_bytes, read_json, require_fields

POPE_SPLITS = ("random", "popular", "adversarial")
DPI = 100
_RC = {
    "svg.hashsalt": "povid-eval",
    "font.family": "DejaVu Sans",
    "font.size": 9,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.axisbelow": True,
}

# (bench, metric key, panel title, y label)
HEADLINES = (
    ("chair", "CHAIRs", "CHAIR_s (lower is better)", "fraction of captions with a hallucination"),
    ("chair", "CHAIRi", "CHAIR_i (lower is better)", "fraction of mentioned objects hallucinated"),
    ("chair", "Recall", "CHAIR Recall (higher is better)", "fraction of GT objects mentioned"),
    ("pope", "mean_f1", "POPE mean F1 (higher is better)", "F1 (0-1)"),
    ("pope", "random.f1", "POPE random F1", "F1 (0-1)"),
    ("pope", "popular.f1", "POPE popular F1", "F1 (0-1)"),
    ("pope", "adversarial.f1", "POPE adversarial F1", "F1 (0-1)"),
    ("mme", "perception", "MME perception (higher is better)", "score (sum of subtasks, 0-200 each)"),
    ("mmhal", "score", "MMHal-Bench score (higher is better)", "judge score (0-6)"),
)


# ---------------------------------------------------------------- reading

def load_metrics(model: str, bench: str, results: str | Path) -> dict:
    path = Path(results) / model / bench / "metrics.json"
    if not path.is_file():
        raise InputError(path, f"no {bench} results of model '{model}': run `povid-eval run --bench {bench} "
                               f"--model {model}`")
    from povid_eval.run.runner import read_metrics

    data = read_metrics(path)
    data.setdefault("intervals", {})
    data["_path"] = path
    return data


FRONTIER_FIELDS = ("Recall", "CHAIRi")  # what every reader needs; the trade-off plot also needs bias, mean_words


def load_frontier(model: str, results: str | Path) -> dict:
    path = Path(results) / model / "frontier.json"
    if not path.is_file():
        raise InputError(path, f"no frontier of model '{model}': run `povid-eval frontier --model {model}`")
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("points"), list) or not data["points"]:
        raise InputError(path, "no 'points' list (not a `povid-eval frontier` frontier.json?)")
    for i, point in enumerate(data["points"]):
        require_fields(path, point, FRONTIER_FIELDS, field=f"points[{i}]")
        for key in FRONTIER_FIELDS:
            if isinstance(point[key], bool) or not isinstance(point[key], (int, float)):
                raise InputError(path, f"expected a number, got {json.dumps(point[key])[:40]}",
                                 field=f"points[{i}].{key}")
    return data


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


def _err(v: float, iv: tuple[float, float]) -> tuple[float, float]:
    """Distances below/above v for an error bar (0 where unknown; clamped non-negative)."""
    lo, hi = iv
    if math.isnan(v) or math.isnan(lo) or math.isnan(hi):
        return 0.0, 0.0
    return max(v - lo, 0.0), max(hi - v, 0.0)


# ---------------------------------------------------------------- drawing

def _figure(w: float, h: float) -> Figure:
    fig = Figure(figsize=(w, h), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _color(i: int):
    return matplotlib.colormaps["tab10"](i % 10)


def _save(fig: Figure, out_dir: str | Path, name: str) -> Path:
    """The figure as PNG (no metadata: same bytes every run), written atomically to out_dir/name."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    target = Path(out_dir) / name
    atomic_write_bytes(target, buf.getvalue())
    return target


def _grouped_bars(ax, groups: Sequence[str], models: Sequence[str], vals, errs) -> None:
    """vals[m][g], errs[m][g] = (below, above); bars per model within each group."""
    n = max(len(models), 1)
    width = 0.8 / n
    for i, m in enumerate(models):
        xs = [g + (i - (n - 1) / 2) * width for g in range(len(groups))]
        lo = [e[0] for e in errs[i]]
        hi = [e[1] for e in errs[i]]
        ax.bar(xs, vals[i], width, yerr=[lo, hi], capsize=3, color=_color(i), label=m,
               error_kw={"elinewidth": 1, "ecolor": "black"})
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups)


def _check_models(models: Sequence[str]) -> list[str]:
    models = list(models)
    if not models:
        raise InputError(None, "no models given to plot")
    return models


# ---------------------------------------------------------------- plots

def metric_bars(models: Sequence[str], results: str | Path, out_dir: str | Path,
                benches: Sequence[str] = ("chair", "pope", "mme", "mmhal")) -> Path:
    """One panel per bench headline (CHAIR CHAIRs/CHAIRi/Recall, POPE mean F1 + per-split F1, MME perception,
    MMHal score) of ``benches``; a bar per model with its 95% interval. POPE split panels whose split no model
    has are left out. Writes ``metric_bars.png``."""
    models = _check_models(models)
    data = {(m, b): load_metrics(m, b, results) for m in models for b in benches}
    # headline metrics are required; a POPE split panel is left out when no model has that split
    panels = [h for h in HEADLINES if h[0] in benches and (
              "." not in h[1] or any(not math.isnan(value(data[m, h[0]], h[1], required=False)) for m in models))]
    with matplotlib.rc_context(_RC):
        cols = 3
        rows = math.ceil(len(panels) / cols)
        fig = _figure(4.0 * cols, 3.0 * rows + 0.8)
        axes = fig.subplots(rows, cols, squeeze=False).ravel()
        for ax, (bench, key, title, ylabel) in zip(axes, panels):
            for i, m in enumerate(models):
                d = data[m, bench]
                v = value(d, key, required="." not in key)
                lo, hi = _err(v, interval(d, key))
                ax.bar([i], [0.0 if math.isnan(v) else v], 0.7, yerr=[[lo], [hi]], capsize=4, color=_color(i),
                       label=m, error_kw={"elinewidth": 1, "ecolor": "black"})
                if not math.isnan(v):
                    ax.annotate(f"{v:.3g}", (i, v + hi), xytext=(0, 2), textcoords="offset points",
                                ha="center", va="bottom", fontsize=7)
            ax.set_title(title)
            ax.set_ylabel(ylabel)
            ax.set_xticks(range(len(models)))
            ax.set_xticklabels(models)
            ax.margins(y=0.15)
        for ax in axes[len(panels):]:
            ax.set_visible(False)
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="upper right", title="model")
        fig.suptitle("Headline metrics per benchmark (whiskers: 95% bootstrap interval)")
        fig.tight_layout(rect=(0, 0, 0.92, 0.97))
        return _save(fig, out_dir, "metric_bars.png")


def chair_tradeoff(models: Sequence[str], results: str | Path, out_dir: str | Path,
                   frontier_model: str = "base") -> Path:
    """CHAIR_i against Recall and against mean words per caption: each model a point with 95% interval error
    bars, and ``frontier_model``'s stop-bias frontier as a line (markers labelled by bias). Writes
    ``chair_tradeoff.png``."""
    models = _check_models(models)
    data = {m: load_metrics(m, "chair", results) for m in models}
    front = load_frontier(frontier_model, results)
    pts = front["points"]
    fpath = Path(results) / frontier_model / "frontier.json"
    for j, p in enumerate(pts):
        for k in ("bias", "CHAIRi", "Recall", "mean_words"):
            if not isinstance(p, dict) or not isinstance(p.get(k), (int, float)):
                raise InputError(fpath, "missing or not a number", field=f"points[{j}].{k}")
    with matplotlib.rc_context(_RC):
        fig = _figure(12.0, 5.2)
        axes = fig.subplots(1, 2)
        for ax, xkey, xlabel, hint in (
                (axes[0], "Recall", "Recall (fraction of GT objects mentioned)", "CHAIR_i vs Recall"),
                (axes[1], "mean_words", "mean words per caption (words)", "CHAIR_i vs caption length")):
            line = sorted(pts, key=lambda p: p["bias"])  # a curve parametrised by the bias
            ax.plot([p[xkey] for p in line], [p["CHAIRi"] for p in line], "-o", color="0.55", markersize=4,
                    zorder=1, label=f"{frontier_model} with stop bias b (frontier)")
            for p in line:
                ax.annotate(f"b={p['bias']:g}", (p[xkey], p["CHAIRi"]), xytext=(4, -9),
                            textcoords="offset points", fontsize=7, color="0.35")
            for i, m in enumerate(models):
                d = data[m]
                x, y = value(d, xkey), value(d, "CHAIRi")
                ex, ey = _err(x, interval(d, xkey)), _err(y, interval(d, "CHAIRi"))
                ax.errorbar([x], [y], xerr=[[ex[0]], [ex[1]]], yerr=[[ey[0]], [ey[1]]], fmt="D", markersize=7,
                            capsize=3, color=_color(i), zorder=3, label=m)
            ax.set_xlabel(xlabel)
            ax.set_ylabel("CHAIR_i (fraction of mentioned objects hallucinated)")
            ax.set_title(hint)
            ax.legend(loc="best", fontsize=8)
        fig.suptitle(f"CHAIR trade-off: lower CHAIR_i is better (and higher Recall). Points below the {frontier_model} "
                     f"line hallucinate less than {frontier_model} made to say less\n"
                     "(error bars: 95% bootstrap interval; b = stop bias: +b on end-of-sequence, -b on list-continuation logits)",
                     fontsize=10)
        fig.tight_layout(rect=(0, 0, 1, 0.93))
        return _save(fig, out_dir, "chair_tradeoff.png")


def _series(data: dict, models: Sequence[str], keys: Sequence[str]) -> tuple[list, list]:
    """Bar heights (0 where a model lacks the metric) and whisker lengths per model, for ``keys``."""
    vals, errs = [], []
    for m in models:
        v = [value(data[m], k, required=False) for k in keys]
        errs.append([_err(x, interval(data[m], k)) for x, k in zip(v, keys)])
        vals.append([0.0 if math.isnan(x) else x for x in v])
    return vals, errs


def pope_splits(models: Sequence[str], results: str | Path, out_dir: str | Path) -> Path:
    """Precision, recall and yes-ratio per POPE split, grouped bars per model with 95% intervals.
    Writes ``pope_splits.png``."""
    models = _check_models(models)
    data = {m: load_metrics(m, "pope", results) for m in models}
    splits = [s for s in POPE_SPLITS if any(isinstance(data[m]["metrics"].get(s), dict) for m in models)]
    if not splits:
        raise InputError(data[models[0]]["_path"], f"no POPE split ({', '.join(POPE_SPLITS)}) in metrics")
    with matplotlib.rc_context(_RC):
        fig = _figure(13.0, 4.4)
        axes = fig.subplots(1, 3)
        for ax, (key, title) in zip(axes, (("precision", "Precision (higher is better)"),
                                           ("recall", "Recall (higher is better)"),
                                           ("yes_ratio", "Yes ratio (0.5 = balanced)"))):
            _grouped_bars(ax, splits, models, *_series(data, models, [f"{s}.{key}" for s in splits]))
            if key == "yes_ratio":
                ax.axhline(0.5, color="black", linestyle="--", linewidth=1, label="balanced (50% yes)")
            ax.set_ylim(0, 1.05)
            ax.set_title(title)
            ax.set_xlabel("POPE split")
            ax.set_ylabel(f"{key} (fraction, 0-1)")
        handles, labels = axes[2].get_legend_handles_labels()
        fig.legend(handles, labels, loc="center right", fontsize=8)
        fig.suptitle("POPE per split (whiskers: 95% bootstrap interval)")
        fig.tight_layout(rect=(0, 0, 0.87, 0.94))
        return _save(fig, out_dir, "pope_splits.png")


def mme_subtasks(models: Sequence[str], results: str | Path, out_dir: str | Path) -> Path:
    """MME score (acc + acc+, 0-200) per subtask, grouped bars per model with 95% intervals.
    Writes ``mme_subtasks.png``."""
    models = _check_models(models)
    data = {m: load_metrics(m, "mme", results) for m in models}
    subtasks = sorted({s for m in models for s in (data[m]["metrics"].get("subtasks") or {})})
    if not subtasks:
        raise InputError(data[models[0]]["_path"], "missing", field="metrics.subtasks")
    with matplotlib.rc_context(_RC):
        fig = _figure(min(16.0, 3.0 + len(subtasks) * (0.6 + 0.3 * len(models))), 4.6)
        ax = fig.subplots()
        _grouped_bars(ax, subtasks, models, *_series(data, models, [f"subtasks.{s}.score" for s in subtasks]))
        ax.set_ylim(0, 205)
        ax.set_xlabel("MME subtask")
        ax.set_ylabel("score (acc + acc+, 0-200; higher is better)")
        ax.legend(title="model", loc="upper right", fontsize=8)
        ax.set_title("MME score per subtask (whiskers: 95% bootstrap interval)")
        fig.tight_layout()
        return _save(fig, out_dir, "mme_subtasks.png")
