"""MME (Fu et al. 2023): paired yes/no questions per image in 14 subtasks; acc + acc+ -> score, perception
and cognition totals. The scorer is scorer.py (eval_tool's rules), the readers files.py, the per-subtask
figure plots.py."""

from __future__ import annotations

from pathlib import Path

from povid_eval.benches.base import Bench, Check, Metric
from povid_eval.benches.mme import files, scorer
from povid_eval.core.errors import InputError

FIX = (
    "the MME release (request it at github.com/BradyFU/Awesome-Multimodal-Large-Language-Models, "
    "Evaluation branch): unzip MME_Benchmark_release_version and eval_tool into {root}/MME/"
)


class MMEBench(Bench):
    name = "mme"
    title = "MME"
    variants = ("eval_tool",)
    files = ("ground_truth", "images")
    metrics = (
        Metric(
            "perception",
            "MME perception",
            True,
            panel=("MME perception (higher is better)", "score (sum of subtasks, 0-200 each)"),
        ),
        Metric("cognition", "MME cognition", True),
    )
    columns = ("perception",)
    decimals = 2
    score_help = "MME from LLaVA-layout answers or an eval_tool results folder"

    def items(self, card):
        return files.items(card)

    def limit(self, items, n):
        """The first n image pairs (a pair is scored whole: acc+)."""
        return items[: 2 * n]

    def score(self, card, samples, *, with_units=False, details=None, **options):
        return files.mme_from_llava(samples, card.data_path("ground_truth"), with_units=with_units)

    def correctness(self, card, samples):
        return files.correctness(card, samples)

    def data_checks(self, card):
        gt = card.data_path("ground_truth")
        present = [s for s in scorer.SUBTASKS if (gt / f"{s}.txt").is_file()]
        return [
            Check(
                "MME ground truth",
                bool(present),
                f"{gt}: {len(present)} of {len(scorer.SUBTASKS)} subtask files" + ("" if present else " (none)"),
                FIX.format(root=card.data),
            )
        ]

    def image_fix(self, card):
        return FIX.format(root=card.data)

    def add_score_arguments(self, p):
        p.add_argument("--answers", help="jsonl of {question_id: '<subtask>/<image>', text, prompt}")
        p.add_argument(
            "--questions", help="jsonl of the questions, same order as the answers (when answers lack prompt)"
        )
        p.add_argument("--ground-truth-dir", help="folder of <subtask>.txt: image<TAB>question<TAB>Yes|No")
        p.add_argument("--results-dir", help="eval_tool results: <subtask>.txt with 4 tab-separated columns")

    def score_files(self, args):
        if args.results_dir is not None:
            if args.answers or args.ground_truth_dir or args.questions:
                raise InputError(
                    None,
                    "--results-dir holds the predictions and the ground truth: give it alone, or "
                    "--answers with --ground-truth-dir (and --questions)",
                )
            return files.mme_from_results_dir(args.results_dir)
        if args.answers and args.ground_truth_dir:
            return files.mme_from_llava(args.answers, args.ground_truth_dir, args.questions)
        raise InputError(None, "give --results-dir DIR, or --answers FILE with --ground-truth-dir DIR")

    def plots(self, models, data, out_dir, *, frontier_model=None, frontier=None):
        from povid_eval.benches.mme.plots import subtask_bars

        return [subtask_bars(models, data, Path(out_dir))]


BENCH = MMEBench()
