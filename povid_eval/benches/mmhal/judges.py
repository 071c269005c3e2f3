"""MMHal-Bench judges. A judge maps a template record (with ``model_answer``) to a reply text that holds
"Rating: N"; the bench's original parser (benches.mmhal.parse_rating) reads every judge's reply, so all
judges go through one path.

    make_judge(card, judge_prompt=None, cache_dir=None) -> Judge
    judge(record) -> reply          judge.judge_all(records) -> replies          judge.info() -> for metrics.json

Kinds (``judge`` in the bench card):

``rule``    deterministic, for the synthetic world ONLY (see below); uses no prompt, no cache.
``openai``  an OpenAI-compatible chat endpoint: ``judge_base_url`` (default https://api.openai.com/v1), the
            model pinned in ``judge_model``, the key from the environment variable ``judge_key_env`` (default
            OPENAI_API_KEY; read when a request is sent, never written anywhere). One user message holding the
            filled prompt as text (no image, as the original evaluation), temperature 0; up to ``workers``
            requests in flight.
``hf``      a local causal LM folder in ``judge_model`` (AutoModelForCausalLM + AutoTokenizer, local files only,
            no remote code), loaded on first use; greedy, ``max_new_tokens`` 256; the prompt goes through the
            tokenizer's chat template as one user turn when it has one, else it is encoded as it is.

Prompt: a text file with exactly four ``{}`` slots, filled in order with the image contents (a list joined
with ", "), the question, the standard (human) answer and the model's answer, as ``str.format`` does (so
``{{``/``}}`` are literal braces). The default is the project's own prompt, benches/mmhal/judge_prompt.txt
(the MMHal 0-6 rubric, in our words); a bench card's ``judge_prompt`` or ``--judge-prompt FILE`` replaces it,
e.g. with the original evaluation's prompt. Its sha256 is recorded in metrics.json (``judge.prompt_sha256``).

Cache (openai, hf): one JSON file per reply in ``cache_dir`` (default ``$POVID_EVAL_CACHE/judge``, see
coco.cache_dir), named by the sha256 of the judge's identity (kind, model, endpoint or weights fingerprint,
decoding settings), the prompt's sha256 and the four slot values; written atomically as each reply comes in.
Re-scoring, a resumed run or a second model with the same answer asks nothing. The API key is not part of
the key and is never written.

``rule``: valid where ``image_content`` lists every object in the image (and its colour): it is not a
substitute for an LLM judge on real images.

    objects(t)     = COCO categories mentioned in text t (CHAIR's vocabulary and singularize tokeniser)
    hallucinated   = objects(answer) - objects(image_content) (a negated mention, "there is no kite", claims
                     nothing), plus any colour, number, position, yes/no or scene word of
                     the answer that contradicts the gt_answer (same kind of word, none of the gt's)
    coverage       = share of the gt_answer's key terms (objects in the image, colours, numbers,
                     positions, yes/no, scene) found in the answer
    rating         = no hallucination: 6 full coverage and extra grounded objects, 5 full, 4 partial, 3 none;
                     hallucination:    2 full coverage, 1 partial, 0 none     (the MMHal 0-6 rubric)
"""

from __future__ import annotations

import hashlib
import re
import string
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from povid_eval.benches.chair import scorer as chair
from povid_eval.core.errors import InputError, MissingAssetError, PovidError

DEFAULT_PROMPT = Path(__file__).with_name("judge_prompt.txt")
DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_KEY_ENV = "OPENAI_API_KEY"
SLOTS = ("image contents", "question", "standard answer", "model answer")
KINDS = ("rule", "openai", "hf")

COLOURS = {"red", "green", "blue", "yellow", "orange", "purple", "pink", "brown", "black", "white", "gray", "grey"}
NUMBERS = {"zero": 0, "no": 0, "one": 1, "a": 1, "an": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6,
           **{str(i): i for i in range(10)}}
POSITIONS = {"left", "right", "top", "bottom", "center", "middle", "above", "below"}
YES_NO = {"yes", "no"}
SCENES = ("kitchen", "street", "office", "living room", "park", "bedroom", "bathroom", "beach", "airport", "field")


# ------------------------------------------------------------------------------------------ the rule judge

def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


NEGATIONS = {"no", "not", "without", "nor", "n't"}


def affirmed_objects(text: str) -> set[str]:
    """COCO categories a text says are there: mentions with no negation among the 3 tokens before them
    ("there is no kite" does not claim a kite)."""
    tokens = chair.tokens_singularize(text)
    mentions = chair.find_mentions(tokens, chair.load_vocabulary())
    return {obj for obj, pos in zip(mentions.objects, mentions.positions)
            if not NEGATIONS & set(tokens[max(0, pos - 3):pos])}


def _key_terms(text: str) -> tuple[set[str], dict[str, set[str]]]:
    """Affirmed objects and the colour / count / position / yes-no / scene words of a text."""
    words = _words(text)
    objects = affirmed_objects(text)
    kinds = {
        "colour": {w for w in words if w in COLOURS},
        "count": {str(NUMBERS[w]) for w in words if w in NUMBERS and w not in ("a", "an", "no")},
        "position": {w for w in words if w in POSITIONS},
        "answer": {w for w in words[:1] if w in YES_NO},
        "scene": {p for p in SCENES if re.search(rf"\b{p}\b", text.lower())},
    }
    return objects, kinds


def rule_judge(record: dict) -> str:
    """Rate one answer on the 0-6 scale (see module docstring); returns an explanation and 'Rating: N'."""
    content = record["image_content"]
    truth = set(chair.caption_mentions(" ".join(content) if isinstance(content, list) else str(content)).objects)
    answer = record.get("model_answer") or ""
    said_objects, said = _key_terms(answer)
    gt_objects, gt = _key_terms(record["gt_answer"])
    gt_objects &= truth  # "No, there is no dog": the dog is not a term to cover
    wrong = sorted(said_objects - truth)
    for kind, terms in gt.items():
        if terms and said[kind] and not (said[kind] & terms):
            wrong += sorted(said[kind])
    wanted = [("object", o) for o in gt_objects] + [(k, t) for k, terms in gt.items() for t in terms]
    found = [(k, t) for k, t in wanted if (t in said_objects if k == "object" else t in said[k])]
    coverage = len(found) / len(wanted) if wanted else (1.0 if answer.strip() else 0.0)
    extra = (said_objects & truth) - gt_objects
    if wrong:
        rating = 2 if coverage == 1 else (1 if coverage > 0 else 0)
    else:
        rating = (6 if extra else 5) if coverage == 1 else (4 if coverage > 0 else 3)
    explanation = (f"Key terms covered: {len(found)}/{len(wanted)}. "
                   f"Not in the image or contradicting the answer: {', '.join(wrong) or 'none'}.")
    return f"{explanation}\nRating: {rating}"


# ------------------------------------------------------------------------------------------ the prompt

@dataclass(frozen=True)
class JudgePrompt:
    """A judge prompt file: its text (four ``{}`` slots) and the sha256 of its bytes."""

    path: Path
    text: str
    sha256: str

    def fill(self, record: dict) -> str:
        return self.text.format(*slot_values(record))


def slot_values(record: dict) -> tuple[str, str, str, str]:
    """The four slot values of a record: image contents (a list joined with ', '), question, standard answer,
    model answer."""
    content = record["image_content"]
    content = ", ".join(map(str, content)) if isinstance(content, list) else str(content)
    return content, str(record["question"]), str(record["gt_answer"]), str(record.get("model_answer") or "")


def load_judge_prompt(path: str | Path | None = None) -> JudgePrompt:
    """Read and check a judge prompt (default: the project's own); a one-line InputError naming the file when
    it is missing, unreadable or has other than exactly four ``{}`` slots."""
    path = Path(path) if path is not None else DEFAULT_PROMPT
    if not path.is_file():
        raise InputError(path, "judge prompt file not found")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(path, f"judge prompt is not UTF-8 text ({e.reason} at byte {e.start})") from None
    want = f"exactly four {{}} slots ({', '.join(SLOTS)}, in this order)"
    try:
        fields = [(name, spec, conv) for _, name, spec, conv in string.Formatter().parse(text) if name is not None]
    except ValueError as e:
        raise InputError(path, f"judge prompt must have {want}; write a literal brace as {{{{ or }}}} ({e})") from None
    odd = [f"{{{name}{'!' + conv if conv else ''}{':' + spec if spec else ''}}}" for name, spec, conv in fields
           if name or spec or conv]
    if odd:
        raise InputError(path, f"judge prompt must have {want}, not named or formatted fields such as {odd[0]}")
    if len(fields) != len(SLOTS):
        raise InputError(path, f"judge prompt must have {want}, found {len(fields)}")
    return JudgePrompt(path, text, hashlib.sha256(data).hexdigest())


# ------------------------------------------------------------------------------------------ judges

class Judge:
    """Callable: ``judge(record) -> reply``; ``judge_all(records)`` rates many (cached, concurrent where the
    kind allows); ``info()`` is what metrics.json records (never a key)."""

    kind = ""
    model: str | None = None
    prompt: JudgePrompt | None = None

    def __call__(self, record: dict) -> str:
        return self.judge_all([record])[0]

    def judge_all(self, records: Sequence[dict]) -> list[str]:
        raise NotImplementedError

    def info(self) -> dict:
        return {"kind": self.kind, "model": self.model,
                "prompt_sha256": self.prompt.sha256 if self.prompt else None,
                "prompt_file": str(self.prompt.path.resolve()) if self.prompt else None}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.info()})"


class RuleJudge(Judge):
    kind = "rule"

    def judge_all(self, records: Sequence[dict]) -> list[str]:
        return [rule_judge(r) for r in records]


class CachedJudge(Judge):
    """A judge whose replies are cached on disk, one JSON file per reply (see the module docstring)."""

    workers = 1

    def __init__(self, model: str, prompt: JudgePrompt, cache_dir: Path | None):
        self.model, self.prompt = model, prompt
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.requests = 0  # replies asked of the model (not from the cache) by this object

    def identity(self) -> dict:
        """What decides a reply besides the prompt and the record (no secrets)."""
        return {"kind": self.kind, "model": self.model}

    def cache_path(self, record: dict) -> Path | None:
        if self.cache_dir is None:
            return None
        from povid_eval.core.http import canonical_json

        key = {"judge": self.identity(), "prompt_sha256": self.prompt.sha256, "slots": list(slot_values(record))}
        return self.cache_dir / f"{hashlib.sha256(canonical_json(key).encode()).hexdigest()}.json"

    def ask(self, prompt: str) -> str:
        """The model's reply to a filled prompt."""
        raise NotImplementedError

    def judge_all(self, records: Sequence[dict]) -> list[str]:
        from povid_eval.core.io import atomic_write_json

        replies: list[str | None] = [None] * len(records)
        paths = [self.cache_path(r) for r in records]
        todo = []
        for i, path in enumerate(paths):
            if path is not None and path.is_file():
                replies[i] = _read_cached(path)
            else:
                todo.append(i)
        lock = threading.Lock()

        def one(i: int) -> None:
            record = records[i]
            reply = self.ask(self.prompt.fill(record))
            with lock:
                self.requests += 1
            if paths[i] is not None:
                content, question, gt_answer, answer = slot_values(record)
                atomic_write_json(paths[i], {"judge": self.identity(), "prompt_sha256": self.prompt.sha256,
                                             "image_content": content, "question": question, "gt_answer": gt_answer,
                                             "model_answer": answer, "reply": reply})
            replies[i] = reply

        if self.workers > 1 and len(todo) > 1:
            with ThreadPoolExecutor(max_workers=min(self.workers, len(todo))) as pool:
                futures = [pool.submit(one, i) for i in todo]
            for future in futures:  # every request has finished (and was cached): now raise the first failure
                future.result()
        else:
            for i in todo:
                one(i)
        return replies  # type: ignore[return-value]


def _read_cached(path: Path) -> str:
    from povid_eval.core.io import read_json

    record = read_json(path)
    if not isinstance(record, dict) or not isinstance(record.get("reply"), str):
        raise PovidError(f"{path}: cached judge reply without a 'reply' string; delete the file to ask again")
    return record["reply"]


class OpenAIJudge(CachedJudge):
    """An OpenAI-compatible chat endpoint (see the module docstring)."""

    kind = "openai"
    workers = 8
    max_tokens = 1024

    def __init__(self, model: str, prompt: JudgePrompt, cache_dir: Path | None, base_url: str = DEFAULT_BASE_URL,
                 key_env: str = DEFAULT_KEY_ENV, workers: int | None = None):
        from povid_eval.core.http import ChatClient

        super().__init__(model, prompt, cache_dir)
        self.client = ChatClient(base_url, model, api_key_env=key_env, temperature=0.0, max_tokens=self.max_tokens)
        self.base_url = self.client.base_url
        if workers is not None:
            self.workers = workers

    def identity(self) -> dict:
        return {"kind": self.kind, "model": self.model, "base_url": self.base_url, "temperature": 0.0,
                "max_tokens": self.max_tokens}

    def info(self) -> dict:
        return {**super().info(), "base_url": self.base_url}

    def ask(self, prompt: str) -> str:
        return self.client.chat([{"role": "user", "content": prompt}])


class HFJudge(CachedJudge):
    """A local causal LM (see the module docstring), loaded on first use: cached replies need no model."""

    kind = "hf"

    def __init__(self, model: str, prompt: JudgePrompt, cache_dir: Path | None, folder: Path,
                 max_new_tokens: int = 256):
        import torch

        super().__init__(model, prompt, cache_dir)
        self.folder, self.max_new_tokens = folder, max_new_tokens
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self._loaded = None
        self._load_lock = threading.Lock()
        # the folder's files by name, size and mtime: a model retrained in place gets new cache entries
        files = sorted(p for p in folder.iterdir() if p.is_file())
        fingerprint = hashlib.sha256("\n".join(f"{p.name} {p.stat().st_size} {p.stat().st_mtime_ns}"
                                               for p in files).encode()).hexdigest()[:16]
        self._identity = {"kind": self.kind, "model": model, "files": fingerprint,
                          "max_new_tokens": max_new_tokens, "device": self.device}

    def identity(self) -> dict:
        return self._identity

    def _load(self):
        with self._load_lock:
            if self._loaded is None:
                from transformers import AutoModelForCausalLM, AutoTokenizer

                try:
                    tokenizer = AutoTokenizer.from_pretrained(self.folder, local_files_only=True,
                                                              trust_remote_code=False)
                    model = AutoModelForCausalLM.from_pretrained(self.folder, local_files_only=True,
                                                                 trust_remote_code=False, dtype="auto")
                except (OSError, ValueError) as e:
                    raise InputError(self.folder, f"cannot load the hf judge as a causal LM: "
                                                  f"{' '.join(str(e).split())[:300]}") from None
                model.to(self.device).eval()
                self._loaded = (tokenizer, model)
        return self._loaded

    def ask(self, prompt: str) -> str:
        import torch

        tokenizer, model = self._load()
        if getattr(tokenizer, "chat_template", None):
            text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                                 tokenize=False)
            enc = tokenizer(text, add_special_tokens=False, return_tensors="pt")
        else:
            enc = tokenizer(prompt, return_tensors="pt")
        enc = {k: v.to(model.device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=self.max_new_tokens, do_sample=False, pad_token_id=pad)
        return tokenizer.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True).strip()


def build_judge(kind: str, *, model: str = "", base_url: str = "", key_env: str = "",
                judge_prompt: str | Path | None = None, cache_dir: str | Path | None = None,
                model_folder: str | Path | None = None, where: str | None = None) -> Judge:
    """A judge from its settings (a bench card's judge_* fields, or the command line's). Paths are used as
    given (relative to the cwd); ``model_folder``: where the hf judge's ``model`` is (default: ``model``).
    ``where`` names the source in errors (e.g. the bench card)."""
    if kind not in KINDS:
        raise InputError(where, f"unknown MMHal judge '{kind}' (known: {', '.join(KINDS)})")
    if kind == "rule":
        if judge_prompt:
            raise InputError(where, "the rule judge uses no prompt; a judge prompt needs judge = openai or hf")
        return RuleJudge()
    if not model:
        raise InputError(where, f"the {kind} judge needs a model (judge_model in the bench card, --judge-model on "
                                "the command line)")
    prompt = load_judge_prompt(judge_prompt)
    if cache_dir is None:
        from povid_eval.benches.coco import cache_dir as default_cache

        cache_dir = default_cache() / "judge"
    if kind == "openai":
        return OpenAIJudge(model, prompt, Path(cache_dir), base_url=base_url or DEFAULT_BASE_URL,
                           key_env=key_env or DEFAULT_KEY_ENV)
    folder = Path(model_folder if model_folder is not None else model).expanduser()
    if not folder.is_dir():
        raise MissingAssetError(f"{folder}: the hf judge's model folder is not there (judge_model must be a local "
                                "causal LM folder)")
    return HFJudge(model, prompt, Path(cache_dir), folder)


def make_judge(card, *, judge_prompt: str | Path | None = None, cache_dir: str | Path | None = None) -> Judge:
    """The judge a bench card names (``judge``, ``judge_model``, ``judge_base_url``, ``judge_key_env``,
    ``judge_prompt``). ``judge_prompt`` (a path as given) overrides the card's (relative to the project root);
    ``cache_dir`` defaults to $POVID_EVAL_CACHE/judge."""
    from povid_eval.cards import resolve_path

    if judge_prompt is not None and (card.judge or "rule") == "rule":
        raise InputError(None, f"--judge-prompt: bench card '{card.name}': the rule judge uses no prompt (a judge "
                               "prompt needs judge = openai or hf)")
    if judge_prompt is None and card.judge_prompt:
        judge_prompt = resolve_path(card.judge_prompt)
    return build_judge(card.judge or "rule", model=card.judge_model, base_url=card.judge_base_url,
                       key_env=card.judge_key_env, judge_prompt=judge_prompt, cache_dir=cache_dir,
                       model_folder=resolve_path(card.judge_model) if card.judge_model else None,
                       where=f"bench card '{card.name}'")


def judge_all(judge: Callable[[dict], str], records: Sequence[dict]) -> list[str]:
    """Replies of any judge: a Judge's judge_all, or a plain callable(record) -> reply per record."""
    if isinstance(judge, Judge):
        return judge.judge_all(records)
    return [judge(r) for r in records]


def describe(judge: Callable[[dict], str]) -> dict:
    """metrics.json's ``judge`` record: {kind, model, prompt_sha256, ...} (a plain callable: kind 'custom')."""
    if isinstance(judge, Judge):
        return judge.info()
    return {"kind": "custom", "model": getattr(judge, "__name__", type(judge).__name__), "prompt_sha256": None,
            "prompt_file": None}


JUDGES: dict[str, Callable[[dict], str]] = {"rule": rule_judge}


def get(name: str) -> Callable[[dict], str]:
    """The rule judge by name (kept for callers of the first API; use make_judge for the others)."""
    if name not in JUDGES:
        raise InputError(None, f"unknown MMHal judge '{name}' (known: {', '.join(JUDGES)})")
    return JUDGES[name]
