"""PNG figures over result files (core/figures.py draws; each bench draws its own figures): the metric bars of
a comparison, the benches' own figures (per split, per subtask, ...) and the trade-off of a metric
against recall and length, with a stop-bias frontier.

Reads result files only (never a model). Every figure is one PNG, byte-identical across runs, written
atomically; whiskers are the 95% bootstrap intervals stored under ``"intervals"`` in metrics.json.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

from povid_eval.benches import registry
from povid_eval.core import figures
from povid_eval.core.errors import InputError
from povid_eval.core.io import read_json, require_fields
from povid_eval.run import results as run_results
from povid_eval.run.frontier import frontier_path

# ---------------------------------------------------------------- reading


def load_metrics(model: str, bench: str, results: Path) -> dict:
    """A model's metrics.json of a bench card (checked: run/results.read_metrics), with its ``_path``."""
    path = run_results.metrics_path(results, model, bench)
    if not path.is_file():
        raise InputError(
            path, f"no {bench} results of model '{model}': run `povid-eval run --bench {bench} --model {model}`"
        )
    data = run_results.read_metrics(path)
    data.setdefault("intervals", {})
    data["_path"] = path
    return data


def load_frontier(model: str, bench: str, results: Path) -> dict:
    """A model's frontier.json on a bench card, its points checked (numbers for the bench's trade-off metric
    and recall; the trade-off figure checks what else it draws), with its ``_path``."""
    path = frontier_path(results, model, bench)
    if not path.is_file():
        raise InputError(
            path,
            f"no frontier of model '{model}' on {bench}: run `povid-eval frontier --model {model} --bench {bench}`",
        )
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("points"), list) or not data["points"]:
        raise InputError(path, "no 'points' list (not a `povid-eval frontier` frontier.json?)")
    tradeoff = registry.bench_of(registry.load_card(bench)).tradeoff
    needed = (tradeoff.metric, tradeoff.recall) if tradeoff else ()
    for i, point in enumerate(data["points"]):
        require_fields(path, point, needed, field=f"points[{i}]")
        for key in needed:
            if isinstance(point[key], bool) or not isinstance(point[key], (int, float)):
                raise InputError(
                    path, f"expected a number, got {json.dumps(point[key])[:40]}", field=f"points[{i}].{key}"
                )
    data["_path"] = path
    return data


# ---------------------------------------------------------------- figures


def metric_bars(models: Sequence[str], benches: Sequence[str], results: Path, out_dir: Path) -> Path:
    """One panel per headline metric with a panel (Bench.panel_metrics) of each bench card in ``benches`` (in
    the registry's order); a bar per model with its 95% interval. A panel of a nested metric ("random.f1")
    that no model has is left out. Writes ``metric_bars.png``."""
    models = list(models)
    data = {(m, b): load_metrics(m, b, results) for m in models for b in benches}
    candidates = [
        (b, metric)
        for b in registry.in_order(benches)
        for metric in registry.bench_of(registry.load_card(b)).panel_metrics()
    ]
    panels = [
        (b, metric)
        for b, metric in candidates
        if "." not in metric.key
        or any(not math.isnan(figures.value(data[m, b], metric.key, required=False)) for m in models)
    ]
    with matplotlib.rc_context(figures.RC):
        cols = 3
        rows = math.ceil(len(panels) / cols)
        fig = figures.figure(4.0 * cols, 3.0 * rows + 0.8)
        axes = fig.subplots(rows, cols, squeeze=False).ravel()
        for ax, (bench, metric) in zip(axes, panels):
            title, ylabel = metric.panel
            for i, m in enumerate(models):
                d = data[m, bench]
                v = figures.value(d, metric.key, required="." not in metric.key)
                lo, hi = figures.err(v, figures.interval(d, metric.key))
                ax.bar(
                    [i],
                    [0.0 if math.isnan(v) else v],
                    0.7,
                    yerr=[[lo], [hi]],
                    capsize=4,
                    color=figures.color(i),
                    label=m,
                    error_kw={"elinewidth": 1, "ecolor": "black"},
                )
                if not math.isnan(v):
                    ax.annotate(
                        f"{v:.3g}",
                        (i, v + hi),
                        xytext=(0, 2),
                        textcoords="offset points",
                        ha="center",
                        va="bottom",
                        fontsize=7,
                    )
            ax.set_title(title)
            ax.set_ylabel(ylabel)
            ax.set_xticks(range(len(models)))
            ax.set_xticklabels(models)
            ax.margins(y=0.15)
        for ax in axes[len(panels) :]:
            ax.set_visible(False)
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="upper right", title="model")
        fig.suptitle("Headline metrics per benchmark (whiskers: 95% bootstrap interval)")
        fig.tight_layout(rect=(0, 0, 0.92, 0.97))
        return figures.save(fig, out_dir, "metric_bars.png")


def tradeoff(models: Sequence[str], bench: str, results: Path, out_dir: Path, frontier_model: str) -> Path | None:
    """The bench's trade-off figure of ``models`` against ``frontier_model``'s frontier (None: the bench has
    no trade-off, or that model no frontier on it)."""
    b = registry.bench_of(registry.load_card(bench))
    if b.tradeoff is None or not frontier_path(results, frontier_model, bench).is_file():
        return None
    data = {m: load_metrics(m, bench, results) for m in models}
    return b.tradeoff_plot(
        list(models), data, Path(out_dir), frontier_model, load_frontier(frontier_model, bench, results)
    )


def comparison_plots(
    models: Sequence[str], benches: Sequence[str], results: Path, out_dir: Path, frontier_model: str
) -> list[Path]:
    """Every figure of a comparison: the metric bars, each bench's trade-off against ``frontier_model``'s
    frontier (where there is one) and each bench's own figures."""
    out = [metric_bars(models, benches, results, out_dir)]
    for bench in benches:
        figure = tradeoff(models, bench, results, out_dir, frontier_model)
        out += [figure] if figure else []
        own = registry.bench_of(registry.load_card(bench))
        out += own.plots(list(models), {m: load_metrics(m, bench, results) for m in models}, Path(out_dir))
    return out
