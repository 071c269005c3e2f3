"""The package's layers: each imports only downward, nothing imports world/ or train/ but the CLI, no import
cycles, function-local imports only where they defer a heavy import, and loading a card imports no torch.

    core < cards < benches < models (vlm) < run < report < cli        world/, train/: beside the stack
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "povid_eval"

LAYERS = [  # (module prefix, layer); the longest matching prefix wins
    ("povid_eval", 0),
    ("povid_eval.core", 0),
    ("povid_eval.cards", 1),
    ("povid_eval.prompts", 1),
    ("povid_eval.benches", 2),
    ("povid_eval.vlm", 3),
    ("povid_eval.run", 4),
    ("povid_eval.report", 5),
    ("povid_eval.cli", 6),
    ("povid_eval.__main__", 6),
    ("povid_eval.perf", 6),
]
SIDE = ("povid_eval.world", "povid_eval.train")  # import downward (layers 0-5); only the CLI layer imports them
# Third-party packages whose import costs time (or memory): the only reason to import inside a function.
HEAVY = {
    "torch",
    "transformers",
    "peft",
    "accelerate",
    "safetensors",
    "matplotlib",
    "nltk",
    "textblob",
    "pycocotools",
    "PIL",
    "numpy",
    "pandas",
    "tqdm",
    "trl",
    "huggingface_hub",
    "sentencepiece",
    "tokenizers",
}
LAZY_PACKAGES = {"povid_eval.vlm"}  # its names import torch when first used (vlm/__init__.py)


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> list[tuple[str, bool, int]]:
    """(imported module, at the top of the module?, line) for every import of the module."""
    tree = ast.parse(path.read_text())
    top_nodes = set()
    for node in tree.body:
        top_nodes.add(node)
        if isinstance(node, (ast.If, ast.Try)):
            top_nodes.update(ast.walk(node))
    out = []
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(parts + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        out += [(t, node in top_nodes, node.lineno) for t in targets]
    return out


IMPORTS = {name: _imports(name, path) for name, path in MODULES.items()}


def _layer(name: str) -> int | None:
    if name.startswith(SIDE):
        return None
    return max(
        (layer for prefix, layer in LAYERS if name == prefix or name.startswith(prefix + ".")), key=lambda layer: layer
    )


def _internal(target: str) -> str | None:
    """The povid_eval module an import names (a module, or the package that holds the imported name)."""
    while target and target not in MODULES:
        target = target.rpartition(".")[0]
    return target or None


def test_every_import_goes_downward():
    wrong = []
    for name, imports in IMPORTS.items():
        for target, _, line in imports:
            target = _internal(target) if target.startswith("povid_eval") else None
            if target is None or target == name:
                continue
            if target.startswith(SIDE) and not name.startswith(SIDE):
                if _layer(name) != 6:
                    wrong.append(f"{name}:{line} imports {target} (only the CLI imports world/ and train/)")
                continue
            if target.startswith(SIDE):
                side_of = lambda m: next(s for s in SIDE if m.startswith(s))  # noqa: E731
                if side_of(name) != side_of(target):
                    wrong.append(f"{name}:{line} imports {target} (world/ and train/ do not import each other)")
                continue
            mine = _layer(name)
            if mine is None:
                if _layer(target) == 6:
                    wrong.append(f"{name}:{line} imports the CLI layer ({target})")
            elif _layer(target) > mine:
                wrong.append(f"{name}:{line} (layer {mine}) imports {target} (layer {_layer(target)})")
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles():
    graph = {
        name: {_internal(t) for t, top, _ in imports if top and t.startswith("povid_eval")} - {name, None}
        for name, imports in IMPORTS.items()
    }
    state: dict[str, int] = {}
    cycles = []

    def visit(node, stack):
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if nxt.startswith(node + ".") or node.startswith(nxt + "."):
                continue  # a package and its own modules
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


def _heavy(name: str, seen: set | None = None) -> bool:
    seen = set() if seen is None else seen
    if name.split(".")[0] in HEAVY or name in LAZY_PACKAGES:
        return True
    module = _internal(name) if name.startswith("povid_eval") else None
    if module is None or module in seen:
        return False
    seen.add(module)
    return any(_heavy(t, seen) for t, top, _ in IMPORTS[module] if top)


def test_function_local_imports_only_defer_heavy_ones():
    light = [
        f"{name}:{line} imports {target} inside a function, but it is not heavy"
        for name, imports in IMPORTS.items()
        for target, top, line in imports
        if not top and not _heavy(target)
    ]
    assert not light, "\n".join(light)


@pytest.mark.parametrize("module", ["povid_eval.cards", "povid_eval.benches.registry", "povid_eval.cli"])
def test_loading_cards_and_the_cli_imports_no_torch(module):
    code = (
        f"import sys, {module}, povid_eval.cards as c; c.load_model_card('base'); "
        "from povid_eval.benches import registry; [registry.load_card(n) for n in c.bench_names('all')]; "
        "print('torch' in sys.modules)"
    )
    if module != "povid_eval.cli":
        code = "import povid_eval.world; " + code  # the world's rule judge, as the CLI registers it
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


GENERIC = [
    PACKAGE / "run" / "runner.py",
    PACKAGE / "run" / "doctor.py",
    PACKAGE / "cli.py",
    *sorted((PACKAGE / "report").glob("*.py")),
]


@pytest.mark.parametrize("path", GENERIC, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_bench_names_outside_the_benches(path):
    """runner, doctor, report and cli know no bench by name: a grep for chair, pope, mme and mmhal (any case)
    finds them only in help texts (the registry lives in benches/)."""
    import re

    tree = ast.parse(path.read_text())
    helps = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg in ("help", "description"):
            helps.update(range(node.value.lineno, node.value.end_lineno + 1))
    found = [
        f"{path.name}:{n}: {line.strip()}"
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"chair|pope|mme|mmhal", line, re.IGNORECASE) and n not in helps
    ]
    assert not found, "\n".join(found)
