"""The leaderboard: every model with results as a row, headline metrics with their 95% intervals as columns.

Reads results/<model>/<bench>/metrics.json only (what ``povid-eval run`` writes) and writes
results/leaderboard.md, .csv and .html. The html is one self-contained file: the table (click a column
header to sort by it), the CHAIR trade-off plot inline as a base64 PNG, no script or style from the network.
"""

from __future__ import annotations

import base64
import csv
import html
import io
from pathlib import Path

from povid_eval.core.errors import InputError
from povid_eval.core.io import atomic_write_text

# (bench, metric key as in metrics/intervals, column title, higher is better)
COLUMNS = (
    ("chair", "CHAIRs", "CHAIR_s", False),
    ("chair", "CHAIRi", "CHAIR_i", False),
    ("chair", "Recall", "CHAIR recall", True),
    ("chair", "mean_words", "words / caption", None),
    ("pope", "mean_f1", "POPE mean F1", True),
    ("pope", "adversarial.f1", "POPE adv. F1", True),
    ("mme", "perception", "MME perception", True),
    ("mmhal", "score", "MMHal score", True),
    ("mmhal", "hallucination_rate", "MMHal halluc. rate", False),
)
NOT_MODELS = {"compare", "plots", "train"}


def bench_folders(group: str = "all") -> dict[str, str]:
    """Bench kind -> the results folder (bench card name) of a bench set: ``all`` = the embedded world's cards
    (chair, pope, mme, mmhal), another set (``real``) = the first card of each kind in benchmarks/<set>/."""
    if group == "all":
        return {kind: kind for kind in dict.fromkeys(c[0] for c in COLUMNS)}
    from povid_eval import cards

    out: dict[str, str] = {}
    for name in cards.bench_names(group):
        card = cards.load_bench_card(name)
        out.setdefault(card.bench, card.name)
    return out


Table = dict[str, dict[str, tuple[float, list[float] | None]]]


def collect(results: str | Path = "results", group: str = "all") -> Table:
    """{model: {column title: (value, [lo, hi] or None)}} for every model folder with a metrics.json of the
    bench set ``group``. Results that an earlier version of a model made are refused (runner.check_current)
    when the model's card is still there; a model without a card is shown as its results stand."""
    import math

    from povid_eval import cards
    from povid_eval.run import runner
    from povid_eval.report.plots import interval, load_metrics, value

    root = Path(results)
    folders = bench_folders(group)
    table: dict[str, dict] = {}
    for folder in sorted(p for p in root.glob("*") if p.is_dir() and p.name not in NOT_MODELS):
        row = {}
        loaded = {kind: load_metrics(folder.name, name, root) for kind, name in folders.items()
                  if (folder / name / "metrics.json").is_file()}
        if loaded and (cards.models_dir() / f"{folder.name}.toml").is_file():
            card = cards.load_model_card(folder.name)
            for name in (folders[kind] for kind in loaded):
                runner.check_current(card, name, root)
        for bench, key, title, _ in COLUMNS:
            v = value(loaded[bench], key, required=False) if bench in loaded else math.nan
            if not math.isnan(v):
                lo, hi = interval(loaded[bench], key)
                row[title] = (v, None if math.isnan(lo) else [lo, hi])
        if row:
            table[folder.name] = row
    if not table:
        raise InputError(root, f"no results to rank: run `povid-eval run --bench {group} --model MODEL` first")
    return table


def _cell(entry) -> str:
    if entry is None:
        return ""
    value, ci = entry
    digits = 2 if abs(value) >= 10 else 4
    return f"{value:.{digits}f}" + (f" [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]" if ci else "")


def to_markdown(table: dict) -> str:
    titles = [c[2] for c in COLUMNS]
    lines = ["| model | " + " | ".join(titles) + " |", "|---|" + "---|" * len(titles)]
    for model, row in table.items():
        lines.append(f"| {model} | " + " | ".join(_cell(row.get(t)) for t in titles) + " |")
    return "\n".join(lines) + "\n"


def to_csv(table: dict) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["model"] + [f"{c[2]}{s}" for c in COLUMNS for s in ("", " lo", " hi")])
    for model, row in table.items():
        cells = []
        for c in COLUMNS:
            value, ci = row.get(c[2], (None, None))
            cells += ["" if value is None else repr(value)] + ([repr(x) for x in ci] if ci else ["", ""])
        writer.writerow([model] + cells)
    return buf.getvalue()


_SCRIPT = """
document.querySelectorAll('th[data-col]').forEach(function (th) {
  th.addEventListener('click', function () {
    var table = th.closest('table'), body = table.tBodies[0], col = +th.dataset.col;
    var up = th.dataset.dir !== 'asc';
    table.querySelectorAll('th').forEach(function (h) { delete h.dataset.dir; });
    th.dataset.dir = up ? 'asc' : 'desc';
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = a.cells[col].dataset.value, y = b.cells[col].dataset.value;
      if (col === 0) return up ? x.localeCompare(y) : y.localeCompare(x);
      x = x === '' ? NaN : +x; y = y === '' ? NaN : +y;
      if (isNaN(x)) return 1; if (isNaN(y)) return -1;
      return up ? x - y : y - x;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  });
});
"""


def to_html(table: dict, plot_png: bytes | None = None) -> str:
    head = "".join(f'<th data-col="{i + 1}" title="{"higher is better" if c[3] else "lower is better" if c[3] is False else ""}">'
                   f"{html.escape(c[2])}</th>" for i, c in enumerate(COLUMNS))
    body = []
    for model, row in table.items():
        cells = [f'<td data-value="{html.escape(model)}">{html.escape(model)}</td>']
        for c in COLUMNS:
            entry = row.get(c[2])
            value = "" if entry is None else repr(entry[0])
            cells.append(f'<td data-value="{value}">{html.escape(_cell(entry))}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    image = ""
    if plot_png:
        image = ('<h2>CHAIR trade-off</h2><img alt="CHAIR_i against recall and caption length" '
                 f'src="data:image/png;base64,{base64.b64encode(plot_png).decode()}">')
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>povid-eval leaderboard</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
th,td{{border:1px solid #ccc;padding:4px 8px;text-align:right}}td:first-child{{text-align:left}}
th{{cursor:pointer;background:#f4f4f4}}th[data-dir=asc]::after{{content:" \\25B2"}}th[data-dir=desc]::after{{content:" \\25BC"}}
img{{max-width:100%}}</style></head>
<body><h1>povid-eval leaderboard</h1>
<p>Headline metrics with 95% cluster-bootstrap intervals; click a column to sort.</p>
<table id="leaderboard"><thead><tr><th data-col="0">model</th>{head}</tr></thead>
<tbody>{"".join(body)}</tbody></table>
{image}
<script>{_SCRIPT}</script>
</body></html>
"""


def write_leaderboard(results: str | Path = "results", frontier_model: str = "base", group: str = "all") -> list[Path]:
    """results/leaderboard.{md,csv,html} (another bench set: leaderboard-<set>.*); the html embeds the CHAIR
    trade-off of every model with CHAIR results (the embedded world's set, whose frontier ``povid-eval
    frontier`` draws)."""
    from povid_eval.report import plots

    root = Path(results)
    table = collect(root, group)
    stem = "leaderboard" if group == "all" else f"leaderboard-{group.replace('/', '-')}"
    paths = [root / f"{stem}.md", root / f"{stem}.csv", root / f"{stem}.html"]
    chair_models = [m for m in table if (root / m / "chair" / "metrics.json").is_file()]
    texts = [to_markdown(table), to_csv(table)]
    png = None  # the plot first: a broken frontier.json stops us before any table is written
    if group == "all" and chair_models and (root / frontier_model / "frontier.json").is_file():
        png = plots.chair_tradeoff(chair_models, root, root / "plots", frontier_model=frontier_model).read_bytes()
    texts.append(to_html(table, png))
    for path, text in zip(paths, texts):
        atomic_write_text(path, text)
    return paths
