"""POPE (Li et al. 2023): yes/no object probing in three splits. The scorer and the question builder are
scorer.py, the readers of LLaVA's layout files.py, the per-split figure plots.py."""

from __future__ import annotations

from pathlib import Path

from povid_eval.benches import coco
from povid_eval.benches.base import Bench, Check, Metric, file_check
from povid_eval.benches.pope import files, scorer
from povid_eval.core.io import iter_jsonl

# LLaVA evaluated POPE with the label files of RUCAIBox/POPE at commit e3e39262 (later commits changed the
# random split: 3,000 lines instead of 2,910, a typo fixed), which match llava_pope_test.jsonl line by line.
LABELS_COMMIT = "e3e39262"
FIX = (
    "LLaVA's playground/data/eval/pope/llava_pope_test.jsonl (haotian-liu/LLaVA) and "
    "output/coco/coco_pope_{{random,popular,adversarial}}.json of github.com/RUCAIBox/POPE at commit "
    f"{LABELS_COMMIT} (the files LLaVA used) into {{root}}/pope/"
)


class PopeBench(Bench):
    name = "pope"
    title = "POPE"
    variants = scorer.PARSERS
    files = ("questions", "labels", "images")
    metrics = (
        Metric("adversarial.f1", "POPE adv. F1", True, panel=("POPE adversarial F1", "F1 (0-1)")),
        Metric("popular.f1", "POPE popular F1", True, panel=("POPE popular F1", "F1 (0-1)")),
        Metric("random.f1", "POPE random F1", True, panel=("POPE random F1", "F1 (0-1)")),
        Metric("mean_f1", "POPE mean F1", True, panel=("POPE mean F1 (higher is better)", "F1 (0-1)")),
        Metric("adversarial.yes_ratio", "POPE adv. yes-ratio", None),
    )
    columns = ("mean_f1", "adversarial.f1")  # LLaVA-1.5's headline first
    panels = ("mean_f1", "random.f1", "popular.f1", "adversarial.f1")
    score_help = "POPE from LLaVA-layout answers"

    def items(self, card):
        return files.items(card)

    def score(self, card, samples, *, with_units=False, details=None, **options):
        return files.pope_from_files(
            samples, card.data_path("questions"), card.data_path("labels"), card.variant, with_units=with_units
        )

    def correctness(self, card, samples):
        return files.correctness(card, samples)

    def data_checks(self, card, **options):
        fix = FIX.format(root=card.data)
        out = [file_check("POPE questions", card.data_path("questions"), fix)]
        if not out[0].ok:
            return out
        for split in sorted(
            {q.get("category", "?") for _, q in iter_jsonl(card.data_path("questions")) if isinstance(q, dict)}
        ):
            out.append(file_check(f"POPE labels ({split})", card.data_path("labels") / f"coco_pope_{split}.json", fix))
        if all(c.ok for c in out):  # before any generation: do the labels belong to these questions?
            problem = files.label_mismatch(card.data_path("questions"), card.data_path("labels"))
            detail = problem or "every split: one label line per question, each line's text begins its question"
            out.append(Check("POPE labels match the questions", problem is None, detail, fix))
        return out

    def image_fix(self, card):
        return coco.FIX_IMAGES.format(root=card.data)

    def add_score_arguments(self, p):
        p.add_argument("--answers", required=True, help="jsonl of {question_id, text}")
        p.add_argument("--questions", required=True, help="jsonl of {question_id, text, category}")
        p.add_argument("--labels-dir", required=True, help="folder with coco_pope_<split>.json label files")
        p.add_argument("--parser", default="llava", choices=list(scorer.PARSERS), help="answer parser (default llava)")

    def score_files(self, args):
        return files.pope_from_files(args.answers, args.questions, args.labels_dir, parser=args.parser)

    def plots(self, models, data, out_dir, *, frontier_model=None, frontier=None):
        from povid_eval.benches.pope.plots import split_bars

        return [split_bars(models, data, Path(out_dir))]


BENCH = PopeBench()
