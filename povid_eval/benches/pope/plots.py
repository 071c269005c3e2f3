"""POPE's figure: precision, recall and yes-ratio per split."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

from povid_eval.core import figures
from povid_eval.core.errors import InputError

POPE_SPLITS = ("random", "popular", "adversarial")


def split_bars(models: Sequence[str], data: dict, out_dir: Path) -> Path:
    """Precision, recall and yes-ratio per POPE split, grouped bars per model with 95% intervals.
    Writes ``pope_splits.png``."""
    splits = [s for s in POPE_SPLITS if any(isinstance(data[m]["metrics"].get(s), dict) for m in models)]
    if not splits:
        raise InputError(data[models[0]]["_path"], f"no POPE split ({', '.join(POPE_SPLITS)}) in metrics")
    with matplotlib.rc_context(figures.RC):
        fig = figures.figure(13.0, 4.4)
        axes = fig.subplots(1, 3)
        for ax, (key, title) in zip(
            axes,
            (
                ("precision", "Precision (higher is better)"),
                ("recall", "Recall (higher is better)"),
                ("yes_ratio", "Yes ratio (0.5 = balanced)"),
            ),
        ):
            figures.grouped_bars(ax, splits, models, *figures.series(data, models, [f"{s}.{key}" for s in splits]))
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
        return figures.save(fig, out_dir, "pope_splits.png")
