"""CHAIR (Rohrbach et al. 2018): object hallucination in image captions. The scorer is scorer.py (both named
variants), the readers files.py, the trade-off figure plots.py, the NLTK data set-up nltk_setup.py; on the
synthetic world, sources.py says where the hallucinations come from."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from povid_eval.benches import coco
from povid_eval.benches.base import Bench, Check, Metric, Options, RunOption, Tradeoff, file_check
from povid_eval.benches.chair import files, grounding, nltk_setup, scorer
from povid_eval.benches.chair.sources import prior_share
from povid_eval.cards import at_least
from povid_eval.core.io import iter_jsonl
from povid_eval.core.paths import project


@dataclass(frozen=True)
class ChairOptions(Options):
    """image_ids: a file of image ids (one per line, '#' comments) to caption, in its order; else ``sample``
    ids drawn with ``sample_seed`` from the annotations' sorted ids; else every image."""

    LATER = ("image_ids", "sample", "sample_seed")
    FILES = ("image_ids",)

    image_ids: str = ""
    sample: int = 0
    sample_seed: int = 0


class ChairBench(Bench):
    name = "chair"
    title = "CHAIR"
    variants = scorer.VARIANTS
    files = ("instances", "annotations", "images")
    optional_files = ("split",)
    Options = ChairOptions
    option_rules = {"sample": at_least(0), "sample_seed": at_least(0)}
    metrics = (
        Metric(
            "CHAIRs", "CHAIR_s", False, panel=("CHAIR_s (lower is better)", "fraction of captions with a hallucination")
        ),
        Metric(
            "CHAIRi",
            "CHAIR_i",
            False,
            panel=("CHAIR_i (lower is better)", "fraction of mentioned objects hallucinated"),
        ),
        Metric(
            "Recall",
            "CHAIR recall",
            True,
            panel=("CHAIR Recall (higher is better)", "fraction of GT objects mentioned"),
        ),
        Metric("Len", "Len", None),
        Metric("mean_words", "words / caption", None),
        Metric("grounding_gap", "grounding gap", True),
        Metric("named_cooc_absent", "names absent partners", False),
        Metric("cooc_share", "hallucinations that are partners", None),
        Metric("d_prime", "naming d' (present vs absent partners)", True),
        Metric("criterion", "naming criterion", None),
    )
    columns = ("CHAIRs", "CHAIRi", "Recall", "mean_words", "grounding_gap")
    tradeoff = Tradeoff(metric="CHAIRi", recall="Recall", length="mean_words")
    run_options = (
        RunOption(
            "--image-ids",
            "image_ids",
            "CHAIR: use these image ids (one per line) instead of the card's pinned list, e.g. another paper's 500",
            override=True,
        ),
    )
    details_file = "details.jsonl"
    score_help = "CHAIR of image captions"

    def items(self, card):
        return files.items(card)

    def score(self, card, samples, *, with_units=False, details=None, **options):
        return files.chair_from_files(
            samples,
            coco_annotations=card.data_path("annotations"),
            variant=card.variant,
            caption_key="text",
            split=card.files.get("split"),
            with_units=with_units,
            with_grounding=True,
            save_details=details,
        )

    def extras(self, card, details):
        """Per-object grounding per category (grounding.py); on the synthetic world, where the hallucinations
        come from (sources.py)."""
        if details is None or not details.is_file():
            return {}
        out = {
            "grounding": {"k": grounding.K, "per_category": grounding.per_category(r for _, r in iter_jsonl(details))}
        }
        manifest = card.data_path() / "manifest.json"
        if card.world and manifest.is_file():
            out["hallucination_sources"] = prior_share(details, card.data_path("instances"), manifest)
        return out

    reliance_measure = "Jaccard distance between the objects named on the clean and on the noised image"

    def reliance(self, card, clean, noised):
        """Per image, 1 - |N_clean & N_noised| / |N_clean | N_noised| over the categories its two captions name
        (0 when neither names any): 0 = the same objects whatever the pixels, 1 = nothing in common."""
        out = []
        for (_, c), (_, n) in zip(clean, noised):
            a = set(scorer.caption_mentions(c["text"], card.variant).objects)
            b = set(scorer.caption_mentions(n["text"], card.variant).objects)
            out.append(1 - len(a & b) / len(a | b) if a | b else 0.0)
        return out

    def noise_sources(self, card, clean, noised):
        """The objects each clean caption hallucinates (once per image), split into those its noised caption
        still names (prior-driven: said without the pixels) and those it does not (appear only with them)."""
        gt = coco.gt_objects_from_coco(card.data_path("annotations"), card.variant, card.files.get("split"))
        prior: dict[str, int] = {}
        pixel: dict[str, int] = {}
        for (_, c), (_, n) in zip(clean, noised):
            truth = gt.get(scorer.normalize_image_id(c.get("image_id", c["key"])), frozenset())
            without = set(scorer.caption_mentions(n["text"], card.variant).objects)
            for obj in sorted(set(scorer.caption_mentions(c["text"], card.variant).objects) - truth):
                tally = prior if obj in without else pixel
                tally[obj] = tally.get(obj, 0) + 1
        n_prior, n_pixel = sum(prior.values()), sum(pixel.values())
        return {
            "hallucinated": n_prior + n_pixel,
            "prior": n_prior,
            "pixel": n_pixel,
            "prior_share": n_prior / (n_prior + n_pixel) if n_prior + n_pixel else 0.0,
            "top_prior": _most_common(prior),
            "top_pixel": _most_common(pixel),
        }

    def data_checks(self, card):
        root = card.data
        out = [
            file_check("annotations (instances)", card.data_path("instances"), coco.FIX_ANNOTATIONS.format(root=root))
        ]
        ann = card.data_path("annotations")
        captions = sorted(ann.glob("captions_*.json")) if ann.is_dir() else []
        out.append(
            Check(
                "annotations (captions)",
                bool(captions),
                f"{ann}: " + (", ".join(p.name for p in captions) if captions else "no captions_*.json"),
                coco.FIX_ANNOTATIONS.format(root=root),
            )
        )
        if card.options.image_ids:
            out.append(
                file_check("image list", project(card.options.image_ids), "pass --image-ids FILE or fix the card")
            )
        return out + [nltk_check(card.variant)]

    def image_fix(self, card):
        return coco.FIX_IMAGES.format(root=card.data)

    def add_score_arguments(self, p):
        p.add_argument("--captions", required=True, help="json list or jsonl of {image_id, caption}")
        gt = p.add_mutually_exclusive_group(required=True)
        gt.add_argument("--gt-objects", help="json(.gz) map image id -> object names (bare or under imid_to_objects)")
        gt.add_argument("--coco-annotations", help="folder with instances_*.json and captions_*.json")
        p.add_argument(
            "--variant",
            default="singularize",
            choices=list(scorer.VARIANTS),
            help="tokenisation: singularize (original CHAIR, POVID) or wordnet (OPERA); default singularize",
        )
        p.add_argument("--image-id-key", default="image_id")
        p.add_argument("--caption-key", default="caption")
        p.add_argument("--save-details", metavar="FILE", help="write per-caption mentions and hallucinations (jsonl)")
        p.add_argument(
            "--grounding",
            action="store_true",
            help="add the per-object grounding metrics (grounding_gap, named_cooc_absent, cooc_share; co-occurrence "
            "counts over every image of the ground truth)",
        )

    def score_files(self, args):
        return files.chair_from_files(
            args.captions,
            gt_objects=args.gt_objects,
            coco_annotations=args.coco_annotations,
            variant=args.variant,
            image_id_key=args.image_id_key,
            caption_key=args.caption_key,
            save_details=args.save_details,
            with_grounding=args.grounding,
        )

    def tradeoff_plot(self, models, data, out_dir, frontier_model, frontier):
        from povid_eval.benches.chair.plots import tradeoff

        return tradeoff(models, data, Path(out_dir), frontier_model, frontier)


FIX_NLTK = (
    "make setup (assembles the NLTK data offline), or with internet: "
    "python -m nltk.downloader punkt_tab averaged_perceptron_tagger_eng wordnet"
)


def _most_common(counts: dict[str, int], k: int = 5) -> list[str]:
    return [o for o, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:k]]


def nltk_check(variant: str) -> Check:
    """The NLTK data the variant tokenises with: punkt_tab (both), the tagger and WordNet (wordnet)."""

    needed = {"punkt_tab"} | ({"averaged_perceptron_tagger_eng", "wordnet"} if variant == "wordnet" else set())
    missing = sorted(set(nltk_setup.missing_resources()) & needed)
    return Check(
        "NLTK data",
        not missing,
        f"missing {', '.join(missing)}" if missing else f"{', '.join(sorted(needed))} found",
        FIX_NLTK,
    )


BENCH = ChairBench()
