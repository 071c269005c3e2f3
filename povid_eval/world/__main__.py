"""`python -m povid_eval.world [--out DIR] [--seed N]`: build the synthetic world (default data/world).

Building the default world (data/world under the project root, default seed and sizes) also refreshes the
committed summary benchmarks/world_manifest.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from povid_eval.core.entry import count, run_reporting
from povid_eval.world import DEFAULT_OUT, ROOT, SUMMARY_FILE, build_world, summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m povid_eval.world", description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--seed", type=count(0), default=0)
    ap.add_argument("--n-train", type=count(1), default=8000)
    ap.add_argument("--n-val", type=count(1), default=500)
    args = ap.parse_args(argv)
    default = args.out.resolve() == (ROOT / DEFAULT_OUT).resolve() and (args.seed, args.n_train, args.n_val) == (
        0,
        8000,
        500,
    )
    start = time.perf_counter()

    def build() -> None:
        manifest = build_world(
            args.out, args.seed, args.n_train, args.n_val, summary_path=SUMMARY_FILE if default else None
        )
        print(json.dumps(summary(manifest), sort_keys=True))
        print(f"built {args.out} in {time.perf_counter() - start:.1f} s")

    return run_reporting(build)


if __name__ == "__main__":
    sys.exit(main())
