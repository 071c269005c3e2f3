"""The `povid-eval` command line: argparse, one small function per subcommand, no logic."""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from pathlib import Path

from povid_eval import __version__, cards
from povid_eval import world as _world  # noqa: F401  (registers the synthetic world's judge, "rule")
from povid_eval.benches import registry
from povid_eval.core import dist, paths
from povid_eval.core.entry import count, run_reporting
from povid_eval.core.errors import InputError, PovidError
from povid_eval.core.io import require_file
from povid_eval.core.paths import name_problem


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``povid-eval: error: <command>: <message>``, exit code 2."""

    def error(self, message: str):
        sys.stderr.write(f"povid-eval: error: {self.prog}: {message} (see {self.prog} --help)\n")
        raise SystemExit(2)


def _name(what: str):
    """An argparse type for a model / output name (paths.NAME_PATTERN)."""

    def parse(text: str) -> str:

        problem = name_problem(text)
        if problem:
            raise argparse.ArgumentTypeError(problem)
        return text

    parse.__name__ = what
    return parse


def _device(text: str) -> str:
    """An argparse type for a torch device: cpu, cuda or cuda:N."""

    if not re.fullmatch(r"cpu|cuda(:\d+)?", text):
        raise argparse.ArgumentTypeError(f"expected cpu, cuda or cuda:N, got {text!r}")
    return text


def _fmt(value, decimals: int) -> str:
    return f"{value:.{decimals}f}" if isinstance(value, float) else str(value)


def _grid(title: str, rows: dict[str, dict], decimals: int) -> list[str]:
    columns = list(dict.fromkeys(c for row in rows.values() for c in row))
    width = max(len(title), *(len(r) for r in rows))
    out = [f"{title:<{width}}" + "".join(f"  {c:>11}" for c in columns)]
    out += [
        f"{r:<{width}}" + "".join(f"  {_fmt(row.get(c, ''), decimals):>11}" for c in columns) for r, row in rows.items()
    ]
    return out


def _pairs(items: list[tuple[str, object]], decimals: int) -> list[str]:
    width = max(len(k) for k, _ in items)
    return [f"{k:<{width}}  {_fmt(v, decimals):>11}" for k, v in items]


def _table(result: dict) -> str:
    """A readable table of a score result: scalars as `name value` lines; flat dicts of the same keys
    (e.g. per split) or dicts of dicts (e.g. per subtask) as grids; other dicts (e.g. per type) as
    `group.name`."""
    decimals = registry.get(result["bench"]).decimals
    metrics = result["metrics"]
    head = f"{result['bench']} (variant {result['variant']}, n = {result['n']})"
    lines = [head, "=" * len(head)]
    scalars = [(k, v) for k, v in metrics.items() if not isinstance(v, dict)]
    groups = {k: v for k, v in metrics.items() if isinstance(v, dict)}
    flat = {k: v for k, v in groups.items() if not any(isinstance(x, dict) for x in v.values())}
    if len(flat) > 1 and len({tuple(v) for v in flat.values()}) == 1:
        lines += _grid("", flat, decimals) + [""]
        groups = {k: v for k, v in groups.items() if k not in flat}
    if scalars:
        lines += _pairs(scalars, decimals)
    for name, group in groups.items():
        lines.append("")
        if all(isinstance(v, dict) for v in group.values()):
            lines += _grid(name, group, decimals)
        else:
            lines += _pairs([(f"{name}.{k}", v) for k, v in group.items()], decimals)
    return "\n".join(lines)


def _print_result(result: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(result, sort_keys=False))
    else:
        print(_table(result))


def cmd_score(args) -> None:
    """`povid-eval score <bench>`: the bench's own readers of the release formats."""
    _print_result(registry.get(args.bench).score_files(args), args.json)


def _bench_options(args) -> dict:
    """The values of the benches' own run flags (RunOption dests) given on the command line."""
    return {o.dest: getattr(args, o.dest) for o in _run_options() if getattr(args, o.dest, None) is not None}


def _run_options() -> list:
    """Every registered bench's own run flags, each once."""
    seen = {}
    for bench in registry.BENCHES.values():
        for option in bench.run_options:
            seen.setdefault(option.flag, option)
    return list(seen.values())


def _check_options_apply(names: list[str], options: dict, group: str) -> None:
    for dest in options:
        takers = [n for n in names if dest in {o.dest for o in registry.bench_of(registry.load_card(n)).run_options}]
        if not takers:
            flag = next(o.flag for o in _run_options() if o.dest == dest)
            raise InputError(None, f"{flag} applies to no bench of --bench {group}")


def _own(name: str, options: dict) -> dict:
    """The options a bench card takes."""
    dests = {o.dest for o in registry.bench_of(registry.load_card(name)).run_options}
    return {k: v for k, v in options.items() if k in dests}


def _ensure_worlds(names: list[str], data: str | None = None) -> None:
    """Build the synthetic world where a card of the run uses it and it is missing (rank 0 alone; the other
    ranks wait for it)."""
    from povid_eval import world

    rank, size = dist.info()
    error = None
    if rank == 0:
        try:
            for name in names:
                card = registry.load_card(name)
                if card.world:
                    world.ensure(Path(data).resolve() if data else card.data_path())
        except PovidError as e:
            error = e
    dist.share_error(error, size)


def cmd_run(args) -> None:
    from povid_eval.run import runner

    names = cards.bench_names(args.bench)
    cards.load_model_card(args.model)  # unknown model or bad card: fail before any work
    options = _bench_options(args)
    _check_options_apply(names, options, args.bench)
    results = paths.results_root(args.results)
    _ensure_worlds(names, args.data)
    for name in names:
        result = runner.run(
            args.model,
            name,
            batch_size=args.batch_size,
            limit=args.limit,
            results=results,
            data=args.data,
            fresh=args.fresh,
            image_noise=args.image_noise,
            **_own(name, options),
        )
        if result is not None:
            _print_result(result, args.json)
            if not args.json:
                print()


def cmd_doctor(args) -> None:
    from povid_eval.run import doctor

    if not args.model and not args.bench:
        args.model, args.bench = "base", "all"
    options = _bench_options(args)
    if args.bench:
        _check_options_apply(cards.bench_names(args.bench), options, args.bench)
    found = doctor.checks(args.model, args.bench, results=paths.results_root(args.results), data=args.data, **options)
    print(doctor.as_json(found) if args.json else doctor.report(found))
    problems = [c for c in found if not c.ok]
    if problems:
        more = f" (and {len(problems) - 1} more problems, listed above)" if len(problems) > 1 else ""
        raise PovidError(problems[0].line() + more)


def _step(text: str) -> int:
    """An argparse type for a diffusion step of POVID's noise, 1..999."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 0 < value < 1000:
        raise argparse.ArgumentTypeError(f"expected a diffusion step in 1..999, got {text!r}")
    return value


def _numbers(kind):
    """An argparse type for comma-separated finite numbers: '0,1,2.5' -> [0.0, 1.0, 2.5] with kind=float."""

    def parse(text: str) -> list:
        parts = [x.strip() for x in text.split(",")]
        try:
            values = [kind(x) for x in parts]
        except ValueError:
            values = []
        if not values or not all(math.isfinite(v) for v in values):
            finite = " (finite)" if kind is float else ""
            raise argparse.ArgumentTypeError(f"expected comma-separated {kind.__name__}s{finite}, got {text!r}")
        return values

    parse.__name__ = "numbers"
    return parse


def cmd_frontier(args) -> None:
    from povid_eval.run.frontier import default_bench, frontier

    bench = args.bench or default_bench()
    _ensure_worlds([bench])
    result = frontier(
        args.model,
        bench,
        biases=args.biases,
        results=paths.results_root(args.results),
        batch_size=args.batch_size,
        limit=args.limit,
    )
    if result is not None:
        shown = registry.bench_of(registry.load_card(bench)).column_metrics()
        rows = {
            f"{p['bias']:g}": {m.key: p[m.key] for m in shown if m.key in p}
            for p in sorted(result["points"], key=lambda p: p["bias"])
        }
        head = f"frontier of {result['model']} on {result['bench']} (n = {result['points'][0]['n']})"
        print("\n".join([head, "=" * len(head)] + _grid("bias", rows, 4)))


def cmd_world_build(args) -> None:

    from povid_eval.world import SUMMARY_FILE, build_world

    start = time.time()
    out = paths.from_cli(args.out, "data/world")
    manifest = build_world(out, seed=args.seed, summary_path=SUMMARY_FILE if args.write_summary else None)
    print(f"world built in {time.time() - start:.1f} s: {out} (sha256 {manifest['sha256'][:16]}, {manifest['counts']})")


def cmd_pretrain(args) -> None:
    from povid_eval.world.pretrain import PretrainConfig, pretrain

    given = [
        f"--{k} {v}" for k, v in (("world", args.world), ("out", args.out), ("tower", args.tower)) if v is not None
    ]
    pretrain(
        paths.from_cli(args.world, "data/world"),
        paths.from_cli(args.out, "models/base"),
        seed=args.seed,
        config=PretrainConfig(seed=args.seed, threads=args.threads),
        tower=args.tower,
        command=" ".join(["povid-eval pretrain", *given, f"--seed {args.seed}", f"--threads {args.threads}"]),
    )


def cmd_train(args) -> None:
    from povid_eval.train import povid

    stages = tuple(args.stages) if args.stages is not None else None
    llm_flags = [
        f
        for f, v in (
            ("--llm-base-url", args.llm_base_url),
            ("--llm-model", args.llm_model),
            ("--llm-key-env", args.llm_key_env),
        )
        if v
    ]
    if llm_flags and args.injector != "llm":
        raise InputError(None, f"{llm_flags[0]} goes with --injector llm")
    if args.injector == "llm" and not (args.llm_base_url and args.llm_model):
        raise InputError(None, f"--injector llm needs {'--llm-base-url' if not args.llm_base_url else '--llm-model'}")
    if args.preferences and (args.injector != "cooccurrence" or args.images):
        flag = "--injector" if args.injector != "cooccurrence" else "--images"
        raise InputError(None, f"{flag} shapes the world's preference data; --preferences brings its own")
    if args.image_root and not args.preferences:
        raise InputError(None, "--image-root goes with --preferences (the folder its image paths are relative to)")
    world = paths.from_cli(args.world, "data/world")

    def prepare_world():
        """Build the synthetic world where it is missing; the --injector llm injector over it."""
        from povid_eval import world as synthetic_world

        synthetic_world.ensure(world)
        if args.injector == "llm":
            return povid.llm_injector(
                args.llm_base_url, args.llm_model, args.llm_key_env, world=world, seed=args.seed or 0
            )
        return None

    config = povid.load_recipe_config(args.config) if args.config else povid.default_recipe()
    if args.seed is not None:
        config.seed = args.seed
    if args.images:
        config.images = args.images
    povid.run_recipe(
        args.base,
        args.out,
        recipe=args.recipe,
        stages=stages,
        config=config,
        preferences=args.preferences,
        image_root=args.image_root,
        world=world,
        results=paths.results_root(args.results),
        merge=args.merge,
        prepare_world=prepare_world,
        overwrite=args.overwrite,
    )


def _print_written(paths: list[Path]) -> None:
    """The first file (a markdown table), then the list of files written."""
    print(paths[0].read_text())
    print("wrote " + ", ".join(str(p) for p in paths))


def cmd_compare(args) -> None:
    from povid_eval.report import compare
    from povid_eval.run.results import ensure_results

    if len(args.models) < 2:
        raise InputError(
            None, "models: compare needs a baseline and at least one more model (povid-eval compare A B ...)"
        )
    benches = cards.bench_names(args.bench)
    results = paths.results_root(args.results)
    for model in args.models:  # every name known before any run starts
        if not (results / paths.RUNS / model).is_dir():
            cards.load_model_card(model)
    _ensure_worlds(benches)
    ensure_results(args.models, benches, results)
    for b in args.models[1:]:
        _print_written(compare.write_comparison(args.models[0], b, benches, results))


def cmd_leaderboard(args) -> None:
    from povid_eval.report.leaderboard import write_leaderboard

    _print_written(
        write_leaderboard(paths.results_root(args.results), frontier_model=args.frontier_model, group=args.bench)
    )


def cmd_perf(args) -> None:
    from povid_eval import perf

    given = [flag for flag, value in (("--captions", args.captions), ("--gt-objects", args.gt_objects)) if value]
    if given and (args.train or args.generate or args.api or args.memory):
        raise InputError(None, f"{given[0]} times the caption scorer; it does not go with --train, --generate or --api")
    for value in (args.captions, args.gt_objects):
        if value:
            require_file(value)
    results = perf.main(
        Path(args.captions) if args.captions else None,
        Path(args.gt_objects) if args.gt_objects else None,
        train=args.train,
        generate=args.generate,
        device=args.device,
        batch=args.batch,
        shape=args.shape,
        api=args.api,
        memory=args.memory,
    )
    if args.json:
        print(json.dumps(results))
        return
    for group, values in results.items():
        print(
            f"{group}: " + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in values.items())
        )


def _add_run_options(p) -> None:
    """The benches' own run flags (e.g. --image-ids, --judge-prompt), from the registry."""
    for option in _run_options():
        p.add_argument(option.flag, dest=option.dest, metavar=option.metavar, help=option.help)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="povid-eval",
        description="POVID-style preference tuning of VLMs and "
        "faithful hallucination benchmarks (CHAIR, POPE, MME, MMHal-Bench).",
    )
    parser.add_argument("--version", action="version", version=f"povid-eval {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)

    score = commands.add_parser("score", help="score existing model outputs (no model needed)")
    benches = score.add_subparsers(dest="bench", required=True, metavar="BENCH", parser_class=Parser)
    for name, bench in registry.BENCHES.items():
        p = benches.add_parser(name, help=bench.score_help or f"{bench.title} of existing outputs")
        p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
        bench.add_score_arguments(p)
        p.set_defaults(func=cmd_score)

    p = commands.add_parser("run", help="generate (cached, resumable) and score benches for a model")
    p.add_argument(
        "--bench",
        required=True,
        help="a bench card name (benchmarks/<name>.toml), 'all' (the "
        "embedded world's cards) or a bench set folder such as 'real' (benchmarks/real/*.toml)",
    )
    p.add_argument("--model", default="base", help="a model card name (models/<name>.toml); default base")
    p.add_argument("--batch-size", type=count(1), default=16, help="prompts per generation batch (default 16)")
    p.add_argument(
        "--limit",
        type=count(0),
        default=0,
        help="first N items (as the bench counts them, e.g. MME: N image pairs; 0 = all)",
    )
    p.add_argument(
        "--data",
        metavar="DIR",
        help="data root instead of the bench card's (e.g. where COCO, POPE, MME and MMHal live on this node)",
    )
    _add_run_options(p)
    p.add_argument(
        "--image-noise",
        metavar="T",
        nargs="?",
        const=500,
        default=0,
        type=_step,
        help="the image-reliance diagnostic: show the model every image noised by POVID's forward diffusion at "
        "step T (default T: 500, POVID's; part of the protocol), results in runs/<model>/noised-t<T>/; "
        "`compare` then reports how each metric moves without the pixels",
    )
    p.add_argument("--results", metavar="DIR", help="results folder (default: the project's results/)")
    p.add_argument(
        "--fresh",
        action="store_true",
        help="discard this model's earlier samples and metrics of these "
        "benches first (e.g. after retraining a model under the same name)",
    )
    p.add_argument("--json", action="store_true", help="print each bench's metrics record as JSON")
    p.set_defaults(func=cmd_run)

    p = commands.add_parser(
        "doctor",
        help="check, in seconds, every asset a run needs and say how to get what "
        "is missing (default: --model base --bench all)",
    )
    p.add_argument("--model", help="a model card name (models/<name>.toml)")
    p.add_argument("--bench", help="a bench card name, 'all' or a bench set folder ('real')")
    p.add_argument("--data", metavar="DIR", help="data root instead of the bench cards' (as run --data)")
    _add_run_options(p)
    p.add_argument(
        "--results", metavar="DIR", help="results folder whose free disk is checked (default: the project's results/)"
    )
    p.add_argument("--json", action="store_true", help="print the checks as JSON")
    p.set_defaults(func=cmd_doctor)

    p = commands.add_parser(
        "frontier", help="the model's trade-off curve (CHAIR_i vs recall) under a sweep of stop biases"
    )
    p.add_argument("--model", default="base", help="a model card name (models/<name>.toml); default base")
    p.add_argument(
        "--bench",
        help="a bench card whose bench has a length trade-off, e.g. chair or real/chair-coco "
        "(default: the first such card of the embedded world's set)",
    )
    p.add_argument(
        "--biases",
        type=_numbers(float),
        default=None,
        help="comma-separated logit biases (default: povid_eval.run.frontier.DEFAULT_BIASES)",
    )
    p.add_argument("--batch-size", type=count(1), default=16, help="prompts per generation batch (default 16)")
    p.add_argument("--limit", type=count(0), default=0, help="first N images (0 = all)")
    p.add_argument("--results", metavar="DIR", help="results folder (default: the project's results/)")
    p.set_defaults(func=cmd_frontier)

    world = commands.add_parser("world", help="the embedded synthetic world").add_subparsers(
        dest="action", required=True, metavar="ACTION", parser_class=Parser
    )
    p = world.add_parser("build", help="build the synthetic COCO-format world (deterministic)")
    p.add_argument("--seed", type=count(0), default=0)
    p.add_argument(
        "--out", help="folder to build into: new, empty, or a world built before (default: the project's data/world)"
    )
    p.add_argument(
        "--write-summary",
        action="store_true",
        help="also write benchmarks/world_manifest.json (the committed seed, counts and hash)",
    )
    p.set_defaults(func=cmd_world_build)

    p = commands.add_parser("perf", help="speed benchmarks (CHAIR scoring, bootstrap)")
    p.add_argument("--captions", help="CHAIR captions file (default: ../shared/fixtures, when present)")
    p.add_argument("--gt-objects", help="CHAIR ground-truth map for those captions")
    p.add_argument(
        "--train",
        action="store_true",
        help="instead: one optimizer step of our DPO, our POVID and "
        "TRL's DPOTrainer on the base model (16 records, median of 5)",
    )
    p.add_argument(
        "--generate",
        choices=["llava-1.5-7b", "tiny", "llava-1.5-mini"],
        help="instead: batched greedy generation of a randomly initialised model of that shape in bf16 (tokens/s, "
        "peak GPU memory); llava-1.5-mini: on CPU through povid-eval's own generation, batch 1 vs 16 (tokens/s, "
        "identical outputs) and the runner's overhead in a real run",
    )
    p.add_argument(
        "--device", default="cuda", type=_device, help="device for --generate: cuda, cuda:N or cpu (default cuda)"
    )
    p.add_argument("--batch", type=count(1), default=16, help="batch size for --generate (default 16)")
    p.add_argument(
        "--shape",
        choices=["tiny", "llava-1.5"],
        default="tiny",
        help="for --train: the embedded base (tiny, default) or a random model with LLaVA-1.5's sequence "
        "structure (576 image tokens, ~40-token prompt, ~100-token responses; our steps with and without prefix "
        "sharing, and TRL's)",
    )
    p.add_argument(
        "--api",
        action="store_true",
        help="instead: a POPE run of 640 items against a loopback endpoint with 200 ms per request and "
        "concurrency 32, pipelined and batched, against the ideal 640 / 32 x 0.2 s",
    )
    p.add_argument(
        "--memory",
        action="store_true",
        help="instead: GPU memory of a LoRA POVID step on LLaVA-1.5-7B at batch 1, 2, 4, 8, derived from the "
        "model's shapes on the meta device (seconds, no GPU)",
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_perf)

    p = commands.add_parser("compare", help="paired comparison of models: deltas with 95%% intervals, Holm, plots")
    p.add_argument(
        "models",
        nargs="+",
        type=_name("model name"),
        help="model card names: the first is the baseline, each other is compared to it",
    )
    p.add_argument("--bench", default="all", help="a bench card name, 'all' (default) or a bench set folder ('real')")
    p.add_argument("--results", metavar="DIR", help="results folder (default: the project's results/)")
    p.set_defaults(func=cmd_compare)

    p = commands.add_parser("leaderboard", help="every model in results/: results/leaderboard.{md,csv,html}")
    p.add_argument("--results", metavar="DIR", help="results folder (default: the project's results/)")
    p.add_argument(
        "--frontier-model",
        default="base",
        type=_name("model name"),
        help="whose stop-bias frontier the plot draws (default base)",
    )
    p.add_argument(
        "--bench",
        default="all",
        help="bench set: 'all' (the embedded world, default) or a folder of "
        "benchmarks/ such as 'real' (writes leaderboard-real.{md,csv,html})",
    )
    p.set_defaults(func=cmd_leaderboard)

    p = commands.add_parser("train", help="POVID / DPO preference tuning of a base card -> LoRA adapter + card")
    p.add_argument("--base", default="base", help="model card to start from (default base)")
    p.add_argument(
        "--out",
        default="povid",
        type=_name("model name"),
        help="name of the trained model: models/<out>.toml (default povid)",
    )
    p.add_argument(
        "--recipe",
        default="povid",
        choices=["povid", "dpo", "noise-only"],
        help="povid: stage 1 DPO on injected text, stage 2 + the noisy-image term; dpo: text pairs "
        "only; noise-only: the noisy-image term only (the paper's ablation)",
    )
    p.add_argument(
        "--stages", type=_numbers(int), default=None, help="POVID stages to run, e.g. 1 or 1,2 (default 1,2)"
    )
    p.add_argument(
        "--injector",
        default="cooccurrence",
        choices=["cooccurrence", "llm"],
        help="how y_l^t is made (default cooccurrence: offline, COCO co-occurrence statistics)",
    )
    p.add_argument("--llm-base-url", help="OpenAI-compatible endpoint for --injector llm (e.g. http://host:8000/v1)")
    p.add_argument("--llm-model", help="model name for --injector llm")
    p.add_argument("--llm-key-env", help="environment variable holding the API key (never written anywhere)")
    p.add_argument("--preferences", help="preference jsonl (or the POVID release json) instead of the world's")
    p.add_argument("--image-root", help="folder the preference records' image paths are relative to")
    p.add_argument("--images", type=count(0), default=0, help="training images of the world (default: the recipe's)")
    p.add_argument("--merge", action="store_true", help="also write the merged model and point the card at it")
    p.add_argument("--config", help="recipe TOML: RecipeConfig keys, [stage1] / [stage2] TrainConfig keys")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace models/<out>.toml and <results>/train/<out> "
        "written by an earlier `povid-eval train` with other settings (never a card it did not write)",
    )
    p.add_argument("--world", help="the synthetic world (default: the project's data/world)")
    p.add_argument(
        "--results",
        metavar="DIR",
        help="results folder; training goes to <results>/train/<out> (default: the project's results/)",
    )
    p.add_argument("--seed", type=count(0), default=None, help="seed (default: the recipe's, 0)")
    p.set_defaults(func=cmd_train)

    p = commands.add_parser("pretrain", help="build and train the tiny base LLaVA on the synthetic world")
    p.add_argument("--world", help="the synthetic world (default: the project's data/world)")
    p.add_argument("--out", help="model folder to write (default: the project's models/base)")
    p.add_argument("--seed", type=count(0), default=0)
    p.add_argument(
        "--threads",
        type=count(1),
        default=1,
        help="torch intra-op threads (default: 1; on a shared 2-core machine 2 threads ran 10x slower)",
    )
    p.add_argument(
        "--tower", help="take the vision tower of this tiny base's folder instead of training one (stage 0 skipped)"
    )
    p.set_defaults(func=cmd_pretrain)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_reporting(lambda: args.func(args))
