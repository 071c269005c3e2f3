"""The benches the pipeline knows, and bench cards loaded through them.

BENCHES                 name -> Bench, in the order reports show them (one line per built-in bench)
register(bench)         add one (a bench folder elsewhere, e.g. a test's toy bench)
get(kind, where)        the Bench of a card's ``kind``; an InputError naming the card otherwise
bench_of(card)          the Bench of a loaded card
in_order(names)         bench card names in the order reports show them
load_card(name)         a bench card (benchmarks/<name>.toml, a path, or <set>/<name>) checked and typed:
                        the common fields by cards.read_bench_card, the variant, [files] and the bench's
                        own options (Bench.Options, option_rules, check_card) here
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from povid_eval import cards
from povid_eval.benches.base import Bench
from povid_eval.benches.chair import BENCH as CHAIR
from povid_eval.benches.mme import BENCH as MME
from povid_eval.benches.mmhal import BENCH as MMHAL
from povid_eval.benches.pope import BENCH as POPE
from povid_eval.core.errors import InputError

BENCHES: dict[str, Bench] = {b.name: b for b in (CHAIR, POPE, MME, MMHAL)}


def register(bench: Bench) -> Bench:
    """Add a bench (its name must be new); returns it."""
    if bench.name in BENCHES:
        raise ValueError(f"a bench named {bench.name!r} is already registered")
    BENCHES[bench.name] = bench
    return bench


def get(kind: str, where: str | Path | None = None, key: str = "kind") -> Bench:
    """The Bench of ``kind``; else an InputError naming ``where`` and the card's ``key``."""
    if kind not in BENCHES:
        raise InputError(where, f"unknown bench kind {kind!r} (known: {', '.join(BENCHES)})", field=key)
    return BENCHES[kind]


def _check_files(path: Path, bench: Bench, files: dict) -> None:
    known = bench.files + bench.optional_files
    for key in bench.files:
        if key not in files:
            raise InputError(path, f"missing key 'files.{key}' (a {bench.name} card needs {', '.join(bench.files)})")
    for key in files:
        if key not in known:
            raise InputError(path, f"unknown key 'files.{key}' (known for {bench.name}: {', '.join(known)})")


def load_card(name_or_path: str, folder: Path | None = None) -> cards.BenchCard:
    """A bench card, checked and typed (see the module docstring)."""
    return make_card(*cards.read_bench_card(name_or_path, folder))


def make_card(path: Path | None, table: dict) -> cards.BenchCard:
    """A bench card from its table (a card file's, or one built in code), checked and typed; errors name
    ``path``."""
    common, own, kind_key = cards.split_bench_table(path, {"name": "card"} | table)
    bench = get(common["kind"], path, kind_key)
    known = sorted({f.name for f in dataclasses.fields(bench.Options)} | set(cards.BENCH_KEYS))
    for key in own:
        if key not in known:
            raise InputError(path, f"unknown key '{key}' (known for {bench.name}: {', '.join(known)})")
    if common["variant"] not in bench.variants:
        raise InputError(
            path,
            f"unknown {bench.name} variant {common['variant']!r} (known: {', '.join(bench.variants)})",
            field="variant",
        )
    _check_files(path, bench, common.get("files", {}))
    cards.check_table(path, own, bench.Options, (), rules=bench.option_rules)
    card = cards.BenchCard(**common, options=bench.Options(**own))
    bench.check_card(path, card)
    return card


def bench_of(card: cards.BenchCard) -> Bench:
    return BENCHES[card.kind]


def in_order(names: list[str]) -> list[str]:
    """Bench card names sorted as reports show them: by their bench's place in BENCHES, then as given."""
    kinds = list(BENCHES)
    return sorted(names, key=lambda n: kinds.index(load_card(n).kind))
