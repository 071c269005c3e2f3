"""MMHal-Bench (Sun et al. 2023): 96 questions (8 types x 12 topics) whose answers a judge rates 0-6;
hallucination = rating < 3. The scorer (the original parse rule) is scorer.py, the judges judges.py with the
project's own prompt judge_prompt.txt, the readers files.py."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from povid_eval.benches.base import Bench, Check, Metric, Options, RunOption, file_check
from povid_eval.benches.mmhal import files, judges
from povid_eval.core.errors import InputError, PovidError
from povid_eval.core.paths import project

FIX = "hf download Shengcao1006/MMHal-Bench --repo-type dataset --local-dir {root}/mmhal"


@dataclass(frozen=True)
class MMHalOptions(Options):
    """The judge: ``judge`` (a kind of judges.kinds()), the pinned ``judge_model`` (openai) or a local causal LM
    folder (hf), the endpoint and the environment variable holding its key, and a prompt file with four {}
    slots (default: judge_prompt.txt)."""

    LATER = ("judge_model", "judge_base_url", "judge_key_env", "judge_prompt")
    FILES = ("judge_prompt",)

    judge: str = ""
    judge_model: str = ""
    judge_base_url: str = ""
    judge_key_env: str = ""
    judge_prompt: str = ""


class MMHalBench(Bench):
    name = "mmhal"
    title = "MMHal-Bench"
    variants = ("original-parser",)
    files = ("template",)
    optional_files = ("images",)
    Options = MMHalOptions
    option_rules = {
        "judge": lambda v: None if v in judges.kinds() else f"must be one of {', '.join(judges.kinds())}, got {v!r}"
    }
    metrics = (
        Metric("score", "MMHal score", True, panel=("MMHal-Bench score (higher is better)", "judge score (0-6)")),
        Metric("hallucination_rate", "MMHal halluc. rate", False),
    )
    run_options = (
        RunOption(
            "--judge-prompt",
            "judge_prompt",
            "MMHal: the judge prompt file instead of the bench "
            "card's (four {} slots; e.g. the original evaluation's prompt); its sha256 goes into "
            "metrics.json",
        ),
    )
    details_file = "judge_replies.jsonl"
    score_help = "MMHal-Bench from judge replies, or judged now"

    def check_card(self, path, card):
        o = card.options
        if not o.judge:
            raise InputError(path, f"missing key 'judge' (an mmhal card needs one of {', '.join(judges.kinds())})")
        if o.judge in judges.PROMPT_KINDS and not o.judge_model:
            raise InputError(
                path,
                f"missing key 'judge_model' (the {o.judge} judge needs a model"
                f"{': a local folder' if o.judge == 'hf' else ', pinned'})",
            )

    def items(self, card):
        return files.items(card)

    def score(self, card, samples, *, with_units=False, details=None, judge=None, judge_prompt=None, **options):
        return files.score_samples(
            card, samples, with_units=with_units, details=details, judge=judge, judge_prompt=judge_prompt
        )

    def prepare(self, card, judge_prompt=None, **options) -> dict:
        """The judge, built before any work (a bad judge setting or prompt fails first; nothing is sent)."""
        return {"judge": judges.make_judge(card, judge_prompt=judge_prompt)}

    def data_checks(self, card, **options):
        return [file_check("MMHal template", card.data_path("template"), FIX.format(root=card.data))]

    def setting_checks(self, card, judge_prompt=None, **options):
        return judge_checks(card, judge_prompt)

    def image_fix(self, card):
        return FIX.format(root=card.data)

    def add_score_arguments(self, p):
        p.add_argument("--responses", required=True, help="the 96-record template with model_answer filled (json)")
        judged = p.add_mutually_exclusive_group(required=True)
        judged.add_argument("--judge-replies", help='jsonl of {"index": i, "reply": "..."}, one per record')
        judged.add_argument(
            "--judge",
            choices=list(judges.kinds()),
            help="judge the answers now: openai (an OpenAI-compatible endpoint), hf (a local causal LM "
            "folder) or rule (the synthetic world only); replies cached in $POVID_EVAL_CACHE/judge",
        )
        p.add_argument("--judge-model", help="openai: the judge model to pin (e.g. gpt-4-0613); hf: the model folder")
        p.add_argument("--judge-base-url", help="openai judge endpoint (default https://api.openai.com/v1)")
        p.add_argument(
            "--judge-key-env",
            help="environment variable holding the judge's API key (default "
            "OPENAI_API_KEY; the key is never written anywhere)",
        )
        p.add_argument(
            "--judge-prompt",
            metavar="FILE",
            help="judge prompt with four {} slots (image contents, "
            "question, standard answer, model answer); default: povid_eval/benches/mmhal/judge_prompt.txt",
        )
        p.add_argument("--save-replies", metavar="FILE", help="write the judge's replies (the --judge-replies layout)")

    def score_files(self, args):
        options = [
            o
            for o, v in (
                ("--judge-model", args.judge_model),
                ("--judge-base-url", args.judge_base_url),
                ("--judge-key-env", args.judge_key_env),
                ("--judge-prompt", args.judge_prompt),
                ("--save-replies", args.save_replies),
            )
            if v
        ]
        if args.judge_replies is not None:
            if options:
                raise InputError(None, f"{options[0]} goes with --judge, not with --judge-replies")
            return files.mmhal_from_files(args.responses, args.judge_replies)
        if args.judge in judges.REGISTERED and options and options[0] != "--save-replies":
            raise InputError(
                None,
                f"{options[0]} goes with --judge openai or hf: the {args.judge} judge uses no "
                "prompt, model or endpoint",
            )
        judge = judges.build_judge(
            args.judge,
            model=args.judge_model or "",
            base_url=args.judge_base_url or "",
            key_env=args.judge_key_env or "",
            judge_prompt=args.judge_prompt,
        )
        return files.mmhal_from_files(args.responses, judge=judge, save_replies=args.save_replies)


def judge_checks(card, judge_prompt: str | Path | None = None) -> list[Check]:
    """The judge: the rule judge only on the synthetic world, the judge model, key and endpoint, the prompt's
    four slots (``judge_prompt``: the run's --judge-prompt, else the card's)."""
    from povid_eval.core.http import probe_endpoint

    o, out = card.options, []
    if o.judge in judges.REGISTERED and not card.world:
        out.append(
            Check(
                "judge",
                False,
                f"the {o.judge} judge is valid on the synthetic world only",
                'set judge = "openai" (or "hf") and judge_model in the bench card',
            )
        )
    elif o.judge == "openai":
        out += probe_endpoint(
            o.judge_base_url or judges.DEFAULT_BASE_URL, o.judge_key_env or judges.DEFAULT_KEY_ENV, "judge"
        )
    elif o.judge == "hf":
        folder = project(o.judge_model)
        ok = (folder / "config.json").is_file()
        out.append(
            Check(
                "judge model",
                ok,
                f"{folder}" + ("" if ok else ": no config.json"),
                "set judge_model to a local causal LM folder",
            )
        )
    prompt = Path(judge_prompt) if judge_prompt else None  # a --judge-prompt path is relative to the cwd
    if prompt is None and o.judge_prompt:
        prompt = project(o.judge_prompt)
    if prompt is not None:
        try:
            judges.load_judge_prompt(prompt)
            out.append(Check("judge prompt", True, f"{prompt}: four {{}} slots"))
        except PovidError as e:
            out.append(
                Check(
                    "judge prompt",
                    False,
                    str(e),
                    "use a prompt with four {} slots: image contents, question, standard answer, model answer",
                )
            )
    return out


BENCH = MMHalBench()
