"""Compare models on the same benches: every metric's delta with a paired, clustered bootstrap interval.

For a bench, both models' samples are put in the bench's item order and scored with the bench's reference
scorer into per-unit rows (the bench decides the unit: an image with all its questions, an image pair, a
question). The same resampled units are applied to both models (core/stats.py ``paired_bootstrap``), so a
delta's interval reflects only how the two models differ on the same images. p-values are adjusted with
Holm's step-down across the whole grid of compared metrics (Holm 1979); a row is marked where the adjusted
p is below alpha. The yes/no accuracy of a yes/no bench (Bench.correctness) is also tested with McNemar's
test on the questions the two models answer differently (McNemar 1947). A bench with a length trade-off
gets a row for its metric at the matched recall of the baseline's stop-bias frontier. Reads result files
only: what is missing is run first by the CLI (run/results.ensure_results).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from povid_eval import cards
from povid_eval.benches import registry
from povid_eval.core import paths
from povid_eval.core.errors import InputError
from povid_eval.core.io import atomic_write_json, atomic_write_text
from povid_eval.core.stats import delta_summary, discordant, holm, mcnemar, paired_bootstrap, resample_counts
from povid_eval.report import plots, reliance
from povid_eval.run import results as run_results
from povid_eval.run.frontier import frontier_path, metric_at_recall
from povid_eval.run.results import aligned_samples, run_arguments, units_of


def mcnemar_rows(card: cards.BenchCard, samples_a: list, samples_b: list) -> list[dict]:
    """Accuracy rows of a yes/no bench (Bench.correctness) tested with McNemar on the discordant questions
    (the same questions, two models)."""
    bench = registry.bench_of(card)
    right_a, right_b = bench.correctness(card, samples_a), bench.correctness(card, samples_b)
    rows = []
    for metric, ra in right_a.items():
        rb = right_b[metric]
        n10, n01 = discordant(ra, rb)
        acc_a, acc_b = sum(ra) / len(ra), sum(rb) / len(rb)
        rows.append(
            {
                "bench": card.name,
                "metric": metric,
                "a": acc_a,
                "b": acc_b,
                "delta": acc_b - acc_a,
                "ci": None,
                "p": mcnemar(n10, n01),
                "test": f"McNemar ({n10} vs {n01} discordant)",
            }
        )
    return rows


def matched_recall_row(
    a: str, card: cards.BenchCard, units_b, from_sums, results: Path, *, n_resamples: int = 10_000, seed: int = 0
) -> dict | None:
    """B's trade-off metric against A's stop-bias frontier at B's own recall (run/frontier.py): a =
    the frontier's metric at B's recall, b = B's metric (from B's unit rows ``units_b``); the interval
    resamples B's images (recall and the metric move together; the frontier is held fixed). None when the
    bench has no trade-off, A has no frontier on it, or B's recall is outside it."""
    tradeoff = registry.bench_of(card).tradeoff
    if tradeoff is None or not frontier_path(results, a, card.name).is_file():
        return None
    points = plots.load_frontier(a, card.name, results)["points"]
    point = from_sums(units_b.sum(0))
    on_curve = metric_at_recall(points, float(point[tradeoff.recall]), tradeoff)
    if on_curve is None:
        return None
    star = from_sums(resample_counts(len(units_b), n_resamples, seed) @ units_b)
    curve = np.array([metric_at_recall(points, float(r), tradeoff) for r in star[tradeoff.recall]], dtype=float)
    keep = ~np.isnan(curve)
    row = delta_summary(on_curve, float(point[tradeoff.metric]), star[tradeoff.metric][keep] - curve[keep])
    return {
        "bench": card.name,
        "metric": f"{tradeoff.metric} at matched {tradeoff.recall.lower()}",
        **row,
        "test": f"bootstrap vs {a}'s frontier",
    }


def compare_models(
    a: str,
    b: str,
    benches: Sequence[str],
    results: Path,
    *,
    n_resamples: int = 10_000,
    seed: int = 0,
    alpha: float = 0.05,
) -> list[dict]:
    """Rows {bench, metric, a, b, delta, ci, p, p_holm, significant} for the headline metrics of each bench,
    its McNemar rows and its matched-recall row."""
    rows = []
    for bench in benches:
        card, card_b = run_results.run_card(a, bench, results), run_results.run_card(b, bench, results)
        if card.protocol_hash() != card_b.protocol_hash():
            raise InputError(
                None,
                f"bench '{bench}': {a} and {b} ran different protocols (e.g. another "
                f"--image-ids list); rerun one of them like the other",
            )
        samples_a, samples_b = aligned_samples(a, bench, results), aligned_samples(b, bench, results)
        arguments = [run_arguments(m, card, results) for m in (a, b)]
        if arguments[0] != arguments[1]:
            raise InputError(
                None,
                f"bench '{bench}': {a} and {b} were scored with different options "
                f"({arguments[0] or 'the card'} vs {arguments[1] or 'the card'}); rerun one of them",
            )
        units_a, from_sums = units_of(card, samples_a, arguments[0])
        units_b, _ = units_of(card_b, samples_b, arguments[1])
        if units_a.shape != units_b.shape:
            raise InputError(
                None,
                f"bench '{bench}': {a} and {b} were scored on different items "
                f"({units_a.shape[0]} vs {units_b.shape[0]} units); rerun with the same --limit",
            )
        stats = paired_bootstrap(units_a, units_b, from_sums, n_resamples=n_resamples, seed=seed)
        for metric in registry.bench_of(card).metrics:
            key = metric.key
            if key in stats and not (stats[key]["a"] == stats[key]["b"] == 0):  # e.g. a subtask group nobody answered
                rows.append({"bench": bench, "metric": key, **stats[key], "test": "paired bootstrap"})
        rows += mcnemar_rows(card, samples_a, samples_b)
        matched = matched_recall_row(a, card, units_b, from_sums, results, n_resamples=n_resamples, seed=seed)
        rows += [matched] if matched else []
    adjusted, significant = holm([r["p"] for r in rows], alpha=alpha)
    for row, p_adj, sig in zip(rows, adjusted, significant):
        row.update(p_holm=float(p_adj), significant=bool(sig))
    return rows


def write_comparison(a: str, b: str, benches: Sequence[str], results: Path) -> list[Path]:
    """<results>/compare/<a>_vs_<b>.{md,csv} and the plots in <results>/plots/<a>_vs_<b>/; returns the paths.
    Everything is computed before the first file is written."""
    rows = compare_models(a, b, benches, results)
    names = [registry.load_card(x).name for x in benches]
    sections = reliance.reliance_sections(a, b, benches, results)
    markdown = to_markdown(a, b, rows) + grounding_markdown(a, b, names, results) + reliance.to_markdown(a, b, sections)
    figures = plots.comparison_plots(
        [a, b], names, results, paths.inside(results, "plots", f"{a}_vs_{b}"), frontier_model=a
    )
    folder = paths.inside(results, "compare")
    written = [folder / f"{a}_vs_{b}.md", folder / f"{a}_vs_{b}.csv"]
    atomic_write_text(written[0], markdown)
    atomic_write_text(written[1], to_csv(rows))
    if sections:
        written.append(folder / f"{a}_vs_{b}.reliance.json")
        atomic_write_json(written[-1], sections)
    return written + figures


def grounding_markdown(a: str, b: str, benches: Sequence[str], results: Path, top: int = 20) -> str:
    """Per-object grounding per category, for every bench whose metrics.json has ``grounding.per_category`` (its
    bench folder says how it is counted): how often each model names a category in the images where it is
    present, and where it is an absent co-occurring object; the ``top`` categories most often in the second
    group ('' where no bench has it)."""
    lines = []
    for bench in benches:
        per = [run_results.read_metrics(run_results.metrics_path(results, m, bench)).get("grounding") for m in (a, b)]
        if not all(isinstance(g, dict) and isinstance(g.get("per_category"), dict) for g in per):
            continue
        cats_a, cats_b = per[0]["per_category"], per[1]["per_category"]
        shown = sorted(set(cats_a) & set(cats_b), key=lambda c: (-cats_a[c]["cooc_absent"], c))[:top]
        lines += [
            "",
            f"## Per-object grounding: {bench}",
            "",
            "How often each model names a category in the images where it is present, and in the images where it is "
            f"absent but among the {per[0].get('k', 3)} objects that co-occur most with what is there (from the "
            "annotations' co-occurrence counts, as adversarial probes are chosen); the categories most often in that "
            "second group. Overall rates and their intervals are the grounding rows of the table above.",
            "",
            f"| category | present in | {a} names it | {b} names it | absent partner in | {a} names it "
            f"| {b} names it |",
            "|---|---|---|---|---|---|---|",
        ]
        for c in shown:
            x, y = cats_a[c], cats_b[c]
            lines.append(
                f"| {c} | {x['present']} | {_rate(x['named_present'])} | {_rate(y['named_present'])} | "
                f"{x['cooc_absent']} | {_rate(x['named_cooc_absent'])} | {_rate(y['named_cooc_absent'])} |"
            )
    return "\n".join(lines) + "\n" if lines else ""


def _rate(x) -> str:
    return "" if x is None else f"{x:.3f}"


def _fmt(x: float) -> str:
    return f"{x:.4f}" if abs(x) < 10 else f"{x:.2f}"


def to_markdown(a: str, b: str, rows: list[dict]) -> str:
    lines = [
        f"# {a} vs {b}",
        "",
        f"Paired cluster bootstrap (10,000 resamples of images), 95% interval of {b} - {a}; "
        "p two-sided, Holm-adjusted across the table; * = significant at 0.05.",
        "",
        f"| bench | metric | {a} | {b} | delta | 95% CI | p (Holm) | | test |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ci = f"[{r['ci'][0]:+.4f}, {r['ci'][1]:+.4f}]" if r["ci"] else ""
        lines.append(
            f"| {r['bench']} | {r['metric']} | {_fmt(r['a'])} | {_fmt(r['b'])} | {r['delta']:+.4f} | "
            f"{ci} | {r['p_holm']:.4f} | {'*' if r['significant'] else ''} | {r['test']} |"
        )
    return "\n".join(lines) + "\n"


def to_csv(rows: list[dict]) -> str:

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["bench", "metric", "a", "b", "delta", "ci_low", "ci_high", "p", "p_holm", "significant", "test"])
    for r in rows:
        ci = [repr(x) for x in r["ci"]] if r["ci"] else ["", ""]
        writer.writerow(
            [
                r["bench"],
                r["metric"],
                repr(r["a"]),
                repr(r["b"]),
                repr(r["delta"]),
                *ci,
                repr(r["p"]),
                repr(r["p_holm"]),
                int(r["significant"]),
                r["test"],
            ]
        )
    return buf.getvalue()
