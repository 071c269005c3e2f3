"""MMHal-Bench's inputs: the 96-record template (json) with ``model_answer`` filled, and the judge's replies
obtained elsewhere (jsonl {index, reply}) or asked now (judges.py); the items of an MMHal bench card."""

from __future__ import annotations

import sys
import urllib.parse
from pathlib import Path

from povid_eval.benches.base import Item
from povid_eval.benches.common import attach_units, result
from povid_eval.benches.mmhal import judges, scorer
from povid_eval.core.errors import InputError
from povid_eval.core.io import atomic_write_jsonl, iter_jsonl, read_json, require_fields, require_text


def load_mmhal_template(path: str | Path, *, need_answer: bool = True) -> list[dict]:
    """The MMHal-Bench records (a JSON list), each checked for the template's fields."""
    records = read_json(path)
    if not isinstance(records, list) or not records:
        raise InputError(path, "expected a non-empty JSON list of MMHal-Bench records")
    fields = scorer.RECORD_FIELDS + (("model_answer",) if need_answer else ())
    for i, rec in enumerate(records):
        require_fields(Path(path), rec, fields, field=f"record {i}")
        for key in ("question", "gt_answer") + (("model_answer",) if need_answer else ()):
            require_text(path, rec[key], key, field=f"record {i}")
        if rec["question_type"] not in scorer.TYPES:
            raise InputError(
                path,
                f"question_type {rec['question_type']!r} is not one of {', '.join(scorer.TYPES)}",
                field=f"record {i}",
            )
    return records


def load_judge_replies(path: str | Path, n: int) -> list[str]:
    """jsonl of {"index": i, "reply": "..."}, exactly one per record 0..n-1."""
    replies: dict[int, str] = {}
    for line, rec in iter_jsonl(path):
        require_fields(Path(path), rec, ("index", "reply"), line=line)
        i = rec["index"]
        if not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < n:
            raise InputError(path, f"index must be an integer in 0..{n - 1}, got {i!r}", line=line)
        if i in replies:
            raise InputError(path, f"second reply for record {i}", line=line)
        require_text(path, rec["reply"], "reply", line=line)
        replies[i] = rec["reply"]
    missing = [i for i in range(n) if i not in replies]
    if missing:
        shown = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
        raise InputError(path, f"no reply for record(s) {shown} (one per template record expected)")
    return [replies[i] for i in range(n)]


def mmhal_result(
    records: list[dict], replies: list[str], variant: str, with_units: bool = False, judge: dict | None = None
) -> dict:
    """Score judge replies with the original parser; ``judge`` (kind, model, prompt_sha256) is recorded in the
    result. Replies without a single 'Rating: N' score 0, as in the original, are counted in
    ``parse_failures`` and announced by a warning line on stderr."""
    metrics = scorer.score([r["question_type"] for r in records], replies)
    if metrics["parse_failures"]:
        print(
            f"povid-eval: warning: {metrics['parse_failures']} of {metrics['n']} MMHal judge replies have no single "
            "'Rating: N' (N in 0-6); scored 0 as the original does (metrics.parse_failures)",
            file=sys.stderr,
        )
    out = result("mmhal", variant, metrics["n"], metrics)
    if judge is not None:
        out["judge"] = judge
    return attach_units(out, scorer.units(replies)) if with_units else out


def mmhal_from_files(
    responses: str | Path,
    judge_replies: str | Path | None = None,
    *,
    judge=None,
    save_replies: str | Path | None = None,
) -> dict:
    """MMHal-Bench from the filled template and either judge replies obtained elsewhere (``judge_replies``,
    variant "judge-replies") or a judge to ask now (``judge``: judges.make_judge / build_judge, or any
    callable(record) -> reply; variant "original-parser"). ``save_replies`` writes the judge's replies in the
    --judge-replies layout. Both are read with the original parse rule."""
    if (judge_replies is None) == (judge is None):
        raise InputError(None, "give exactly one of --judge-replies FILE or --judge rule|openai|hf")
    records = load_mmhal_template(responses)
    if judge_replies is not None:
        return mmhal_result(records, load_judge_replies(judge_replies, len(records)), "judge-replies")
    replies = judges.judge_all(judge, records)
    if save_replies is not None:
        atomic_write_jsonl(save_replies, [{"index": i, "reply": reply} for i, reply in enumerate(replies)])
    return mmhal_result(records, replies, "original-parser", judge=judges.describe(judge))


def image_path(card, record: dict) -> Path:
    """An MMHal image: with an ``images`` folder in the card, the file named as the last part of the record's
    ``image_src`` URL (the release's images/ folder), else ``image_src`` relative to the data root (the world)."""
    if "images" in card.files:
        return card.data_path("images") / urllib.parse.urlparse(record["image_src"]).path.rsplit("/", 1)[-1]
    return card.data_path() / record["image_src"]


def items(card) -> list[Item]:
    """One item per template record, in template order."""
    path = card.data_path("template")
    records = load_mmhal_template(path, need_answer=False)
    for i, r in enumerate(records):
        require_fields(path, r, ("image_src",), field=f"record {i}")
        require_text(path, r["image_src"], "image_src", field=f"record {i}")
    return [
        Item(str(i), image_path(card, r), card.ask(r["question"]), {"question_id": i}) for i, r in enumerate(records)
    ]


def score_samples(
    card,
    samples,
    *,
    with_units: bool = False,
    details: Path | None = None,
    judge=None,
    judge_prompt: str | Path | None = None,
) -> dict:
    """Judge the samples' answers (``judge``, else the card's judge with ``judge_prompt`` instead of the card's
    prompt) and score the replies with the original parser; the replies go to ``details`` (jsonl)."""
    records = load_mmhal_template(card.data_path("template"), need_answer=False)
    by_index = {int(s["question_id"]): s["text"] for _, s in samples}
    kept = [records[i] | {"model_answer": by_index[i]} for i in sorted(by_index)]
    judge = judge or judges.make_judge(card, judge_prompt=judge_prompt)
    replies = judges.judge_all(judge, kept)
    if details is not None:
        atomic_write_jsonl(details, [{"index": i, "reply": reply} for i, reply in zip(sorted(by_index), replies)])
    return mmhal_result(kept, replies, card.variant, with_units, judge=judges.describe(judge))
