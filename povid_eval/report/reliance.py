"""Image reliance: how much two models' answers depend on the pixels (`povid-eval run --image-noise T`).

POVID's premise (Zhou et al. 2024, "Aligning Modalities in Vision Large Language Models via Preference
Fine-tuning") is that what a model still says about an image noised by the forward diffusion (step t; vlm/noise.py)
comes from its language prior. Each model runs a bench twice, on the clean images and on the same images noised
at step t (the same noise for every model). For models A and B on that bench:

    shift_m          = m(noised) - m(clean), per model and headline metric m; B's shift - A's shift with a
                       paired bootstrap interval (the same resampled units for the four runs; core/stats.py)
    reliance         = the mean over items of the bench's per-item answer change (Bench.reliance; captions: the
                       Jaccard distance between the objects named on the clean and on the noised image; yes/no
                       answers: the share that change): higher = the answers depend more on the pixels; per
                       model with a 95% bootstrap interval, and B - A paired
    sources          (captioning benches) the clean captions' hallucinations the model still names without the
                       pixels (prior-driven) and those it names only with them (Bench.noise_sources)

Reads result files only; a bench enters when both models have a finished noised run at the same step.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from povid_eval import cards
from povid_eval.benches import registry
from povid_eval.benches.common import ratio
from povid_eval.core import paths
from povid_eval.core.errors import InputError
from povid_eval.core.stats import bootstrap_intervals, paired_bootstrap, resample_counts
from povid_eval.run import results as run_results
from povid_eval.run.results import aligned_samples, run_arguments, units_of


def _shifts(from_sums, k: int):
    """from_sums over [clean | noised] rows -> every metric's noised - clean."""

    def shift(sums):
        s = np.asarray(sums, dtype=float)
        clean, noised = from_sums(s[..., :k]), from_sums(s[..., k:])
        return {m: np.asarray(noised[m], dtype=float) - np.asarray(clean[m], dtype=float) for m in clean}

    return shift


def _mean(sums):
    s = np.asarray(sums, dtype=float)
    return {"reliance": ratio(s[..., 0], s[..., 1])}


def bench_reliance(
    a: str, b: str, bench: str, step: int, results: Path, *, n_resamples: int = 10_000, seed: int = 0
) -> dict:
    """{bench, step, measure, rows (per headline metric: clean, noised and shift of A and B, the paired
    difference of shifts), reliance ({a, b, ci_a, ci_b, delta, ci, p}), sources ({model: ...} or None)}."""
    for model in (a, b):  # a stale noised run is never reported (run/results.check_current)
        if run_results.card_exists(model):
            run_results.check_current(cards.load_model_card(model), registry.load_card(bench).name, results, step)
    run_cards = {(m, noise): run_results.run_card(m, bench, results, noise) for m in (a, b) for noise in (0, step)}
    card = run_cards[a, 0]
    kind = registry.bench_of(card)
    noised = [run_cards[m, step] for m in (a, b)]
    if (
        card.protocol_hash() != run_cards[b, 0].protocol_hash()
        or len({c.protocol_hash() for c in noised}) != 1
        or any(c.image_noise != step for c in noised)
    ):
        raise InputError(
            None,
            f"bench '{bench}': {a} and {b} ran different protocols on the clean or the noised (t = {step}) images; "
            "rerun one of them like the other",
        )
    runs, units = {}, {}
    for (model, noise), c in run_cards.items():
        runs[model, noise] = aligned_samples(model, bench, results, noise)
        units[model, noise], from_sums = units_of(c, runs[model, noise], run_arguments(model, c, results, noise))
    shapes = {m.shape for m in units.values()}
    if len(shapes) != 1:
        raise InputError(
            None,
            f"bench '{bench}': the clean and noised runs of {a} and {b} were scored on different units "
            f"({sorted(shapes)}); rerun them with the same --limit",
        )
    n, k = next(iter(shapes))
    counts = resample_counts(n, n_resamples, seed)
    paired = paired_bootstrap(
        np.hstack([units[a, 0], units[a, step]]),
        np.hstack([units[b, 0], units[b, step]]),
        _shifts(from_sums, k),
        counts=counts,
    )
    points = {key: from_sums(u.sum(axis=0)) for key, u in units.items()}
    rows = [
        {
            "metric": m.key,
            "a_clean": float(points[a, 0][m.key]),
            "a_noised": float(points[a, step][m.key]),
            "b_clean": float(points[b, 0][m.key]),
            "b_noised": float(points[b, step][m.key]),
            **{f"shift_{x}": v for x, v in (("a", paired[m.key]["a"]), ("b", paired[m.key]["b"]))},
            "delta": paired[m.key]["delta"],
            "ci": paired[m.key]["ci"],
            "p": paired[m.key]["p"],
        }
        for m in kind.metrics
        if m.key in paired
    ]
    per_item = {
        model: np.array([[v, 1.0] for v in kind.reliance(card, runs[model, 0], runs[model, step])]).reshape(-1, 2)
        for model in (a, b)
    }
    compared = paired_bootstrap(
        per_item[a], per_item[b], _mean, counts=resample_counts(len(per_item[a]), n_resamples, seed)
    )
    alone = {m: bootstrap_intervals(per_item[m], _mean, n_resamples=n_resamples, seed=seed)["reliance"] for m in (a, b)}
    sources = {model: kind.noise_sources(card, runs[model, 0], runs[model, step]) for model in (a, b)}
    return {
        "bench": card.name,
        "step": step,
        "measure": kind.reliance_measure,
        "rows": rows,
        "reliance": {**compared["reliance"], "ci_a": alone[a], "ci_b": alone[b]},
        "sources": sources if any(sources.values()) else None,
    }


def reliance_sections(a: str, b: str, benches: Sequence[str], results: Path) -> list[dict]:
    """bench_reliance for every bench and step at which both models have a finished noised run."""
    out = []
    for bench in benches:
        name = registry.load_card(bench).name
        steps = sorted(set(paths.noised_steps(results, a, name)) & set(paths.noised_steps(results, b, name)))
        out += [bench_reliance(a, b, bench, step, results) for step in steps]
    return out


def _f(x: float) -> str:
    return f"{x:.4f}" if abs(x) < 10 else f"{x:.2f}"


def _ci(ci) -> str:
    return f"[{ci[0]:+.4f}, {ci[1]:+.4f}]"


def to_markdown(a: str, b: str, sections: list[dict]) -> str:
    """The image-reliance part of compare's markdown ('' without noised runs)."""
    if not sections:
        return ""
    lines = ["", "## Image reliance: the same benches on diffusion-noised images", ""]
    lines.append(
        "Each model answered every item twice: on the clean image and on the image noised by POVID's forward "
        "diffusion at step t (`povid-eval run --image-noise t`; the same noise for both models). shift = noised - "
        f"clean; the last columns are {b}'s shift - {a}'s, with a paired bootstrap 95% interval (10,000 resamples). "
        "Reliance: how much the answers change without the pixels (higher: the answers depend more on the image)."
    )
    for s in sections:
        lines += [
            "",
            f"### {s['bench']}, t = {s['step']}",
            "",
            f"| metric | {a} clean | {a} noised | {a} shift | {b} clean | {b} noised | {b} shift | "
            "shift difference | 95% CI | p |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in s["rows"]:
            lines.append(
                f"| {r['metric']} | {_f(r['a_clean'])} | {_f(r['a_noised'])} | {r['shift_a']:+.4f} | "
                f"{_f(r['b_clean'])} | {_f(r['b_noised'])} | {r['shift_b']:+.4f} | {r['delta']:+.4f} | "
                f"{_ci(r['ci'])} | {r['p']:.4f} |"
            )
        rel = s["reliance"]
        lines += [
            "",
            f"Reliance ({s['measure']}, mean over items): {a} {rel['a']:.4f} "
            f"[{rel['ci_a'][0]:.4f}, {rel['ci_a'][1]:.4f}], {b} {rel['b']:.4f} [{rel['ci_b'][0]:.4f}, "
            f"{rel['ci_b'][1]:.4f}]; {b} - {a} = {rel['delta']:+.4f} {_ci(rel['ci'])}, p = {rel['p']:.4f}.",
        ]
        if s["sources"]:
            lines += [
                "",
                "| model | hallucinated objects (clean) | still named without the pixels (prior) "
                "| only with the pixels | most frequent prior-driven | most frequent pixel-driven |",
                "|---|---|---|---|---|---|",
            ]
            for model in (a, b):
                src = s["sources"][model]
                lines.append(
                    f"| {model} | {src['hallucinated']} | {src['prior']} ({src['prior_share']:.1%}) | {src['pixel']} | "
                    f"{', '.join(src['top_prior'])} | {', '.join(src['top_pixel'])} |"
                )
    return "\n".join(lines) + "\n"
