"""MME's figure: the score (acc + acc+) per subtask."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

from povid_eval.core import figures
from povid_eval.core.errors import InputError


def subtask_bars(models: Sequence[str], data: dict, out_dir: Path) -> Path:
    """MME score (acc + acc+, 0-200) per subtask, grouped bars per model with 95% intervals.
    Writes ``mme_subtasks.png``."""
    subtasks = sorted({s for m in models for s in (data[m]["metrics"].get("subtasks") or {})})
    if not subtasks:
        raise InputError(data[models[0]]["_path"], "missing", field="metrics.subtasks")
    with matplotlib.rc_context(figures.RC):
        fig = figures.figure(min(16.0, 3.0 + len(subtasks) * (0.6 + 0.3 * len(models))), 4.6)
        ax = fig.subplots()
        figures.grouped_bars(
            ax, subtasks, models, *figures.series(data, models, [f"subtasks.{s}.score" for s in subtasks])
        )
        ax.set_ylim(0, 205)
        ax.set_xlabel("MME subtask")
        ax.set_ylabel("score (acc + acc+, 0-200; higher is better)")
        ax.legend(title="model", loc="upper right", fontsize=8)
        ax.set_title("MME score per subtask (whiskers: 95% bootstrap interval)")
        fig.tight_layout()
        return figures.save(fig, out_dir, "mme_subtasks.png")
