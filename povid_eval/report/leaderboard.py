"""The leaderboard: every model with results as a row, headline metrics with their 95% intervals as columns.

Reads results/runs/<model>/<bench>/metrics.json only (what ``povid-eval run`` writes) and writes
results/leaderboard.md, .csv and .html. The columns are the benches' own (Bench.column_metrics). The html is
one self-contained file: the table (click a column header to sort by it), the trade-off plot inline
as a base64 PNG, no script or style from the network.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import math
from pathlib import Path

from povid_eval import cards
from povid_eval.benches import registry
from povid_eval.benches.base import Metric
from povid_eval.core import figures, paths
from povid_eval.core.errors import InputError
from povid_eval.core.io import atomic_write_text
from povid_eval.report import plots
from povid_eval.report.plots import load_metrics
from povid_eval.run import results as run_results

# A column: (bench card name, Metric); from the benches of the set (Bench.column_metrics), in the registry's order.
Column = tuple[str, Metric]
Table = dict[str, dict[str, tuple[float, list[float] | None]]]


def set_cards(group: str = "all") -> list[str]:
    """The bench cards a leaderboard of a bench set shows: the first card of each bench kind, in the
    registry's order (``all`` = the embedded world's cards; another set, e.g. ``real``, = benchmarks/<set>/)."""
    first: dict[str, str] = {}
    for name in cards.bench_names(group):
        card = registry.load_card(name)
        first.setdefault(card.kind, card.name)
    return registry.in_order(list(first.values()))


def columns(group: str = "all") -> list[Column]:
    return [
        (name, metric)
        for name in set_cards(group)
        for metric in registry.bench_of(registry.load_card(name)).column_metrics()
    ]


def collect(results: Path, group: str = "all") -> Table:
    """{model: {column title: (value, [lo, hi] or None)}} for every model (results/runs/<model>/) with a
    metrics.json of the bench set ``group``. Results that an earlier version of a model made are refused
    (run/results.check_current) when the model's card is still there; a model without a card is shown as its
    results stand."""
    table: dict[str, dict] = {}
    names = set_cards(group)
    for model in paths.model_names(results):
        loaded = {
            name: load_metrics(model, name, results)
            for name in names
            if run_results.metrics_path(results, model, name).is_file()
        }
        if loaded and run_results.card_exists(model):
            card = cards.load_model_card(model)
            for name in loaded:
                run_results.check_current(card, name, results)
        row = {}
        for name, metric in columns(group):
            v = figures.value(loaded[name], metric.key, required=False) if name in loaded else math.nan
            if not math.isnan(v):
                lo, hi = figures.interval(loaded[name], metric.key)
                row[metric.title] = (v, None if math.isnan(lo) else [lo, hi])
        if row:
            table[model] = row
    if not table:
        raise InputError(results, f"no results to rank: run `povid-eval run --bench {group} --model MODEL` first")
    return table


def _cell(entry) -> str:
    if entry is None:
        return ""
    value, ci = entry
    digits = 2 if abs(value) >= 10 else 4
    return f"{value:.{digits}f}" + (f" [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]" if ci else "")


def to_markdown(table: dict, cols: list[Column]) -> str:
    titles = [metric.title for _, metric in cols]
    lines = ["| model | " + " | ".join(titles) + " |", "|---|" + "---|" * len(titles)]
    for model, row in table.items():
        lines.append(f"| {model} | " + " | ".join(_cell(row.get(t)) for t in titles) + " |")
    return "\n".join(lines) + "\n"


def to_csv(table: dict, cols: list[Column]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["model"] + [f"{m.title}{s}" for _, m in cols for s in ("", " lo", " hi")])
    for model, row in table.items():
        cells = []
        for _, m in cols:
            value, ci = row.get(m.title, (None, None))
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


def to_html(table: dict, cols: list[Column], plot: tuple[str, str, bytes] | None = None) -> str:
    """The self-contained page; ``plot``: (heading, alt text, PNG bytes) of the trade-off figure, inline."""
    head = "".join(
        f'<th data-col="{i + 1}" title="{_direction(m)}">{html.escape(m.title)}</th>' for i, (_, m) in enumerate(cols)
    )
    body = []
    for model, row in table.items():
        cells = [f'<td data-value="{html.escape(model)}">{html.escape(model)}</td>']
        for _, m in cols:
            entry = row.get(m.title)
            value = "" if entry is None else repr(entry[0])
            cells.append(f'<td data-value="{value}">{html.escape(_cell(entry))}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    image = ""
    if plot:
        heading, alt, png = plot
        image = (
            f'<h2>{html.escape(heading)}</h2><img alt="{html.escape(alt)}" '
            f'src="data:image/png;base64,{base64.b64encode(png).decode()}">'
        )
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
"""  # noqa: E501  (the page's own style line)


def _direction(metric: Metric) -> str:
    return {True: "higher is better", False: "lower is better"}.get(metric.higher_is_better, "")


def write_leaderboard(results: Path, frontier_model: str = "base", group: str = "all") -> list[Path]:
    """<results>/leaderboard.{md,csv,html} (another bench set: leaderboard-<set>.*); the html embeds the
    trade-off figure of the set's first bench with a trade-off: every model with results on it against
    ``frontier_model``'s frontier (`povid-eval frontier`), when that frontier exists. Everything is computed
    before the first file is written."""
    table = collect(results, group)
    cols = columns(group)
    stem = "leaderboard" if group == "all" else f"leaderboard-{group.replace('/', '-')}"
    written = [paths.inside(results, f"{stem}.{ext}") for ext in ("md", "csv", "html")]
    plot = None  # the plot first: a broken frontier.json stops us before any table is written
    for name in set_cards(group):
        bench = registry.bench_of(registry.load_card(name))
        if bench.tradeoff is None:
            continue
        models = [m for m in table if run_results.metrics_path(results, m, name).is_file()]
        figure = (
            plots.tradeoff(models, name, results, paths.inside(results, "plots"), frontier_model) if models else None
        )
        if figure is not None:
            title = next(m.title for m in bench.metrics if m.key == bench.tradeoff.metric)
            plot = (f"{bench.title} trade-off", f"{title} against recall and caption length", figure.read_bytes())
        break
    texts = [to_markdown(table, cols), to_csv(table, cols), to_html(table, cols, plot)]
    for path, text in zip(written, texts):
        atomic_write_text(path, text)
    return written
