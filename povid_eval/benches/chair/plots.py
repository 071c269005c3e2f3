"""CHAIR's figure: the trade-off of CHAIR_i against recall and caption length, with a model's stop-bias
frontier (see run/frontier.py), so a reader sees whether a model hallucinates less or only says less."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

from povid_eval.core import figures
from povid_eval.core.errors import InputError


def tradeoff(models: Sequence[str], data: dict, out_dir: Path, frontier_model: str, frontier: dict) -> Path:
    """CHAIR_i against Recall and against mean words per caption: each model a point with 95% interval error
    bars, and ``frontier_model``'s stop-bias frontier as a line (markers labelled by bias). Writes
    ``chair_tradeoff.png``. ``data``: model -> its loaded CHAIR metrics.json; ``frontier``: the loaded
    frontier.json of ``frontier_model``."""
    pts = frontier["points"]
    fpath = frontier.get("_path")
    for j, p in enumerate(pts):
        for k in ("bias", "CHAIRi", "Recall", "mean_words"):
            if not isinstance(p, dict) or not isinstance(p.get(k), (int, float)):
                raise InputError(fpath, "missing or not a number", field=f"points[{j}].{k}")
    with matplotlib.rc_context(figures.RC):
        fig = figures.figure(12.0, 5.2)
        axes = fig.subplots(1, 2)
        for ax, xkey, xlabel, hint in (
            (axes[0], "Recall", "Recall (fraction of GT objects mentioned)", "CHAIR_i vs Recall"),
            (axes[1], "mean_words", "mean words per caption (words)", "CHAIR_i vs caption length"),
        ):
            line = sorted(pts, key=lambda p: p["bias"])  # a curve parametrised by the bias
            ax.plot(
                [p[xkey] for p in line],
                [p["CHAIRi"] for p in line],
                "-o",
                color="0.55",
                markersize=4,
                zorder=1,
                label=f"{frontier_model} with stop bias b (frontier)",
            )
            for p in line:
                ax.annotate(
                    f"b={p['bias']:g}",
                    (p[xkey], p["CHAIRi"]),
                    xytext=(4, -9),
                    textcoords="offset points",
                    fontsize=7,
                    color="0.35",
                )
            for i, m in enumerate(models):
                d = data[m]
                x, y = figures.value(d, xkey), figures.value(d, "CHAIRi")
                ex, ey = figures.err(x, figures.interval(d, xkey)), figures.err(y, figures.interval(d, "CHAIRi"))
                ax.errorbar(
                    [x],
                    [y],
                    xerr=[[ex[0]], [ex[1]]],
                    yerr=[[ey[0]], [ey[1]]],
                    fmt="D",
                    markersize=7,
                    capsize=3,
                    color=figures.color(i),
                    zorder=3,
                    label=m,
                )
            ax.set_xlabel(xlabel)
            ax.set_ylabel("CHAIR_i (fraction of mentioned objects hallucinated)")
            ax.set_title(hint)
            ax.legend(loc="best", fontsize=8)
        fig.suptitle(
            f"CHAIR trade-off: lower CHAIR_i is better (and higher Recall). Points below the {frontier_model} "
            f"line hallucinate less than {frontier_model} made to say less\n"
            "(error bars: 95% bootstrap interval; b = stop bias: +b on end-of-sequence, -b on list-continuation "
            "logits)",
            fontsize=10,
        )
        fig.tight_layout(rect=(0, 0, 1, 0.93))
        return figures.save(fig, out_dir, "chair_tradeoff.png")
