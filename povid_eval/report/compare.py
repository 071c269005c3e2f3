"""Compare models on the same benches: every metric's delta with a paired, clustered bootstrap interval.

For a bench, both models' samples are put in the bench's item order and scored with the reference scorer
into per-unit rows (an image for CHAIR and POPE: all its questions; an image pair for MME; a question for
MMHal). The same resampled units are applied to both models (report/stats.py ``paired_bootstrap``), so a
delta's interval reflects only how the two models differ on the same images. p-values are adjusted with
Holm's step-down across the whole grid of compared metrics (Holm 1979); a row is marked where the adjusted
p is below alpha. Yes/no accuracy (POPE per split, MME) is also tested with McNemar's test on the questions
the two models answer differently (McNemar 1947). Reads result files only: what is missing must be run first (``povid-eval run``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from povid_eval import cards, score
from povid_eval.core.errors import InputError

HEADLINE = {
    "chair": ("CHAIRs", "CHAIRi", "Recall", "Len", "mean_words"),
    "pope": ("adversarial.f1", "popular.f1", "random.f1", "mean_f1", "adversarial.yes_ratio"),
    "mme": ("perception", "cognition"),
    "mmhal": ("score", "hallucination_rate"),
}


def aligned_samples(model: str, bench: str, out: str | Path = "results") -> list[tuple[int, dict]]:
    """A model's finished samples of a bench as (line, record), in the bench's item order."""
    from povid_eval.run import runner

    card = runner.run_card(model, bench, out)
    path = Path(out) / model / card.name / "samples.jsonl"
    if not path.is_file():
        raise InputError(path, f"no results of model '{model}' on bench '{bench}': "
                               f"run `povid-eval run --bench {bench} --model {model}` first")
    done = runner.read_samples(path)
    items = runner.bench_items(card, limit=_recorded_limit(path.parent))
    missing = [it.key for it in items if it.key not in done]
    if missing:
        raise InputError(path, f"{len(missing)} of {len(items)} samples missing (e.g. {missing[0]!r}): "
                               f"finish `povid-eval run --bench {bench} --model {model}` first")
    return score.Located([done[it.key] for it in items], path)


def units_of(card: cards.BenchCard, samples: list[tuple[int, dict]], judge_prompt: str | None = None):
    """(matrix, from_sums): the per-unit rows of samples in item order, from the bench's reference scorer
    (MMHal: the judge with ``judge_prompt``, replies from the judge cache)."""
    from povid_eval.run import runner

    return runner.score_samples(card, samples, with_units=True, judge_prompt=judge_prompt)["units"]


def recorded_judge_prompt(model: str, card: cards.BenchCard, out: str | Path = "results") -> str | None:
    """The judge prompt file a model's MMHal run used (the card's, or ``run --judge-prompt``), from its
    metrics.json; None for the rule judge or another bench."""
    from povid_eval.run.runner import read_metrics

    path = Path(out) / model / card.name / "metrics.json"
    judge = (read_metrics(path).get("judge") or {}) if card.bench == "mmhal" and path.is_file() else {}
    prompt = judge.get("prompt_file") if isinstance(judge, dict) else None
    if prompt is not None and not isinstance(prompt, str):
        raise InputError(path, f"expected a path, got {json.dumps(prompt)[:40]}", field="judge.prompt_file")
    if not prompt:
        return None
    if not Path(prompt).is_file():
        raise InputError(path, f"judge prompt {prompt} of that run is gone: put it back or rerun the bench")
    return prompt


def aligned_units(model: str, bench: str, out: str | Path = "results"):
    """(matrix, from_sums) of a model's finished samples on a bench, rows in the bench's item order."""
    from povid_eval.run import runner

    card = runner.run_card(model, bench, out)
    return units_of(card, aligned_samples(model, bench, out), recorded_judge_prompt(model, card, out))


def question_correctness(card: cards.BenchCard, samples: list[tuple[int, dict]]) -> dict[str, list[bool]]:
    """Whether each yes/no question is answered right, in sample order: POPE per split (the card's parser),
    MME over all questions (eval_tool's parser). Other benches: {}."""
    from povid_eval import score
    from povid_eval.benches.mme import scorer as mme
    from povid_eval.benches.pope import scorer as pope

    out: dict[str, list[bool]] = {}
    if card.bench == "pope":
        questions = score.load_pope_questions(card.data_path("questions"))
        labels: dict[str, list] = {}
        for _, rec in samples:
            split, index, _, _ = questions[rec["question_id"]]
            if split not in labels:
                labels[split] = score.load_pope_labels(card.data_path("labels"), split)
            out.setdefault(f"{split}.accuracy", []).append(
                pope.PARSE[card.variant](rec["text"]) == labels[split][index][1]["label"])
    elif card.bench == "mme":
        answers = {}
        for name in mme.SUBTASKS:
            path = card.data_path("ground_truth") / f"{name}.txt"
            if path.is_file():
                for k, (_, (image, _q, answer)) in enumerate(score.read_mme_tsv(path, 3)):
                    answers[f"{name}/{image}/{k % 2}"] = answer.lower()
        out["accuracy"] = [mme.parse_prediction(rec["text"]) == answers[rec["key"]] for _, rec in samples]
    return out


def mcnemar_rows(card: cards.BenchCard, samples_a: list, samples_b: list) -> list[dict]:
    """Accuracy rows tested with McNemar on the discordant questions (the same questions, two models)."""
    from povid_eval.core.stats import discordant, mcnemar

    right_a, right_b = question_correctness(card, samples_a), question_correctness(card, samples_b)
    rows = []
    for metric, ra in right_a.items():
        rb = right_b[metric]
        n10, n01 = discordant(ra, rb)
        acc_a, acc_b = sum(ra) / len(ra), sum(rb) / len(rb)
        rows.append({"bench": card.name, "metric": metric, "a": acc_a, "b": acc_b, "delta": acc_b - acc_a,
                     "ci": None, "p": mcnemar(n10, n01), "test": f"McNemar ({n10} vs {n01} discordant)"})
    return rows


def _recorded_limit(folder: Path) -> int:
    from povid_eval.run.runner import read_metrics

    metrics = folder / "metrics.json"
    return int(read_metrics(metrics).get("limit") or 0) if metrics.is_file() else 0


def matched_recall_row(a: str, bench: str, units_b, from_sums, out: str | Path = "results", *,
                       n_resamples: int = 10_000, seed: int = 0) -> dict | None:
    """B's CHAIR_i against A's stop-bias frontier at B's own recall (povid_eval/frontier.py): a = the
    frontier's CHAIR_i at B's recall, b = B's CHAIR_i (from B's unit rows ``units_b``); the interval resamples
    B's images (recall and CHAIR_i move together; the frontier is held fixed). None when A has no frontier
    or B's recall is outside it."""
    import numpy as np

    from povid_eval.run.frontier import chair_i_at_recall
    from povid_eval.report.plots import load_frontier
    from povid_eval.core.stats import delta_summary, resample_counts

    if not (Path(out) / a / "frontier.json").is_file():
        return None
    points = load_frontier(a, out)["points"]
    point = from_sums(units_b.sum(0))
    on_curve = chair_i_at_recall(points, float(point["Recall"]))
    if on_curve is None:
        return None
    star = from_sums(resample_counts(len(units_b), n_resamples, seed) @ units_b)
    curve = np.array([chair_i_at_recall(points, float(r)) for r in star["Recall"]], dtype=float)
    keep = ~np.isnan(curve)
    row = delta_summary(on_curve, float(point["CHAIRi"]), star["CHAIRi"][keep] - curve[keep])
    return {"bench": bench, "metric": "CHAIRi at matched recall", **row, "test": f"bootstrap vs {a}'s frontier"}


def compare_models(a: str, b: str, benches: Sequence[str], out: str | Path = "results", *,
                   n_resamples: int = 10_000, seed: int = 0, alpha: float = 0.05) -> list[dict]:
    """Rows {bench, metric, a, b, delta, ci, p, p_holm, significant} for the headline metrics of each bench."""
    from povid_eval.run import runner
    from povid_eval.core.stats import holm, paired_bootstrap

    rows = []
    for bench in benches:
        card, card_b = runner.run_card(a, bench, out), runner.run_card(b, bench, out)
        if card.protocol_hash() != card_b.protocol_hash():
            raise InputError(None, f"bench '{bench}': {a} and {b} ran different protocols (e.g. another "
                                   f"--image-ids list); rerun one of them like the other")
        samples_a, samples_b = aligned_samples(a, bench, out), aligned_samples(b, bench, out)
        prompts = [recorded_judge_prompt(m, card, out) for m in (a, b)]
        if prompts[0] != prompts[1]:
            raise InputError(None, f"bench '{bench}': {a} and {b} were judged with different prompts "
                                   f"({prompts[0] or 'the card'} vs {prompts[1] or 'the card'}); rerun one of them")
        units_a, from_sums = units_of(card, samples_a, prompts[0])
        units_b, _ = units_of(card_b, samples_b, prompts[1])
        if units_a.shape != units_b.shape:
            raise InputError(None, f"bench '{bench}': {a} and {b} were scored on different items "
                                   f"({units_a.shape[0]} vs {units_b.shape[0]} units); rerun with the same --limit")
        stats = paired_bootstrap(units_a, units_b, from_sums, n_resamples=n_resamples, seed=seed)
        for metric in HEADLINE[card.bench]:
            if metric in stats and not (stats[metric]["a"] == stats[metric]["b"] == 0):  # e.g. no MME cognition
                rows.append({"bench": bench, "metric": metric, **stats[metric], "test": "paired bootstrap"})
        if card.bench in ("pope", "mme"):
            rows += mcnemar_rows(card, samples_a, samples_b)
        if card.bench == "chair":
            matched = matched_recall_row(a, bench, units_b, from_sums, out, n_resamples=n_resamples, seed=seed)
            rows += [matched] if matched else []
    adjusted, significant = holm([r["p"] for r in rows], alpha=alpha)
    for row, p_adj, sig in zip(rows, adjusted, significant):
        row.update(p_holm=float(p_adj), significant=bool(sig))
    return rows


def ensure_results(models: Sequence[str], benches: Sequence[str], out: str | Path = "results") -> None:
    """Run (through the runner's cache) every model x bench whose metrics.json is missing; refuse results
    that an earlier version of a model made (runner.check_current), when the model's card is still there."""
    from povid_eval.run import runner

    for model in models:
        card = cards.load_model_card(model) if (cards.models_dir() / f"{model}.toml").is_file() else None
        for bench in benches:
            name = cards.load_bench_card(bench).name
            if (Path(out) / model / name / "metrics.json").is_file():
                if card is not None:
                    runner.check_current(card, name, Path(out))
            else:
                cards.load_model_card(model)   # a model with no results and no card: a clear error
                runner.run(model, bench, out=out)


def write_comparison(a: str, b: str, benches: Sequence[str], out: str | Path = "results") -> list[Path]:
    """results/compare/<a>_vs_<b>.{md,csv} and the plots in results/plots/<a>_vs_<b>/; returns the paths."""
    from povid_eval.core.io import atomic_write_text
    from povid_eval.report import plots

    rows = compare_models(a, b, benches, out)
    folder = Path(out) / "compare"
    paths = [folder / f"{a}_vs_{b}.md", folder / f"{a}_vs_{b}.csv"]
    atomic_write_text(paths[0], to_markdown(a, b, rows))
    atomic_write_text(paths[1], to_csv(rows))
    plot_dir = Path(out) / "plots" / f"{a}_vs_{b}"
    kinds = {cards.load_bench_card(x).bench for x in benches}
    paths.append(plots.metric_bars([a, b], out, plot_dir, benches=sorted(kinds)))
    if "chair" in kinds and (Path(out) / a / "frontier.json").is_file():
        paths.append(plots.chair_tradeoff([a, b], out, plot_dir, frontier_model=a))
    if "pope" in kinds:
        paths.append(plots.pope_splits([a, b], out, plot_dir))
    if "mme" in kinds:
        paths.append(plots.mme_subtasks([a, b], out, plot_dir))
    return paths


def _fmt(x: float) -> str:
    return f"{x:.4f}" if abs(x) < 10 else f"{x:.2f}"


def to_markdown(a: str, b: str, rows: list[dict]) -> str:
    lines = [f"# {a} vs {b}", "",
             f"Paired cluster bootstrap (10,000 resamples of images), 95% interval of {b} - {a}; "
             "p two-sided, Holm-adjusted across the table; * = significant at 0.05.", "",
             f"| bench | metric | {a} | {b} | delta | 95% CI | p (Holm) | | test |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ci = f"[{r['ci'][0]:+.4f}, {r['ci'][1]:+.4f}]" if r["ci"] else ""
        lines.append(f"| {r['bench']} | {r['metric']} | {_fmt(r['a'])} | {_fmt(r['b'])} | {r['delta']:+.4f} | "
                     f"{ci} | {r['p_holm']:.4f} | {'*' if r['significant'] else ''} | {r['test']} |")
    return "\n".join(lines) + "\n"


def to_csv(rows: list[dict]) -> str:
    import csv
    import io

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["bench", "metric", "a", "b", "delta", "ci_low", "ci_high", "p", "p_holm", "significant", "test"])
    for r in rows:
        ci = [repr(x) for x in r["ci"]] if r["ci"] else ["", ""]
        writer.writerow([r["bench"], r["metric"], repr(r["a"]), repr(r["b"]), repr(r["delta"]), *ci,
                         repr(r["p"]), repr(r["p_holm"]), int(r["significant"]), r["test"]])
    return buf.getvalue()
