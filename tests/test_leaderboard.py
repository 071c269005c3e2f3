"""`povid-eval leaderboard`: one row per model with intervals; a self-contained html that Chromium renders."""

import json
import re
import shutil
import subprocess

import pytest

from povid_eval import cli
from povid_eval.core.errors import InputError
from povid_eval.report import leaderboard

METRICS = {
    "chair": ({"CHAIRs": 0.5, "CHAIRi": 0.15, "Recall": 0.7, "mean_words": 20.0}, "CHAIRi"),
    "pope": ({"mean_f1": 0.85, "adversarial": {"f1": 0.7}}, "mean_f1"),
    "mme": ({"perception": 300.0}, "perception"),
    "mmhal": ({"score": 2.5, "hallucination_rate": 0.4}, "score"),
}


@pytest.fixture
def results(tmp_path, monkeypatch):
    # hand-made metrics of models without cards (no model here to check them against: shown as they stand)
    monkeypatch.setenv("POVID_EVAL_MODELS", str(tmp_path / "no-cards"))
    for k, model in enumerate(("base", "povid", "other")):
        for bench, (metrics, key) in METRICS.items():
            if model == "other" and bench != "chair":
                continue  # a model with one bench only: empty cells, still a row
            scaled = json.loads(json.dumps(metrics).replace("0.", f"0.{k}"))
            folder = tmp_path / "runs" / model / bench
            folder.mkdir(parents=True)
            (folder / "metrics.json").write_text(json.dumps({"metrics": scaled, "intervals": {key: [0.1, 0.2]}}))
    (tmp_path / "compare").mkdir()  # reports live beside runs/, never among the models
    (tmp_path / "runs" / "compare").mkdir()  # so a model may even be called compare (no results: no row)
    return tmp_path


def test_tables_have_one_row_per_model_with_intervals(results):
    paths = leaderboard.write_leaderboard(results)
    md = paths[0].read_text().splitlines()
    assert [line.split("|")[1].strip() for line in md[2:]] == ["base", "other", "povid"]
    assert "[0.1000, 0.2000]" in md[2]
    header = paths[1].read_text().splitlines()[0].split(",")
    assert header[:4] == ["model", "CHAIR_s", "CHAIR_s lo", "CHAIR_s hi"]
    page = paths[2].read_text()
    assert "http://" not in page and "https://" not in page and page.count("<tr><td") == 3
    assert leaderboard.write_leaderboard(results) and paths[2].read_text() == page  # deterministic


def test_no_results_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(InputError, match="no results to rank"):
        leaderboard.collect(tmp_path)
    assert cli.main(["leaderboard", "--results", str(tmp_path)]) == 2
    assert "no results to rank" in capsys.readouterr().err


def test_html_renders_in_headless_chromium(results):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium not installed (make setup installs it where the machine allows)")
    page = leaderboard.write_leaderboard(results)[2]
    done = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    rows = re.findall(r"<tr><td data-value=\"([^\"]+)\"", done.stdout)
    assert rows == ["base", "povid", "other"] or sorted(rows) == ["base", "other", "povid"]
