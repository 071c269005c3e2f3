"""MMHal-Bench judges. A judge maps a template record (with ``model_answer``) to a reply text that holds
"Rating: N"; the bench's original parser (benches.mmhal.parse_rating) reads every judge's reply, so all
judges go through one path.

    make_judge(card, judge_prompt=None, cache_dir=None) -> Judge
    judge(record) -> reply          judge.judge_all(records) -> replies          judge.info() -> for metrics.json

Kinds (``judge`` in the bench card):

``rule``    deterministic, for the synthetic world ONLY (world/judge.py, registered by the world); no prompt.
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
core/paths.cache_dir), named by the sha256 of the judge's identity (kind, model, endpoint or weights fingerprint,
decoding settings), the prompt's sha256 and the four slot values; written atomically as each reply comes in.
Re-scoring, a resumed run or a second model with the same answer asks nothing. The API key is not part of
the key and is never written.

Judges that need no prompt and no model join with ``register(kind, factory)``: importing povid_eval.world
registers the synthetic world's deterministic ``rule`` judge (world/judge.py), valid on the world only.
"""

from __future__ import annotations

import hashlib
import string
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from povid_eval.core.errors import InputError, MissingAssetError, PovidError
from povid_eval.core.io import atomic_write_json, read_json
from povid_eval.core.paths import cache_dir as default_cache
from povid_eval.core.paths import project

DEFAULT_PROMPT = Path(__file__).with_name("judge_prompt.txt")
DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_KEY_ENV = "OPENAI_API_KEY"
SLOTS = ("image contents", "question", "standard answer", "model answer")
PROMPT_KINDS = ("openai", "hf")
REGISTERED: dict[str, Callable[[], Judge]] = {}  # judges without a prompt or model, e.g. the world's "rule"


def register(kind: str, factory: Callable[[], Judge]) -> None:
    """Add a judge kind that needs no prompt and no model (povid_eval.world registers its ``rule`` judge)."""
    REGISTERED[kind] = factory


def kinds() -> tuple[str, ...]:
    """Every judge kind known now: the registered ones, then openai and hf."""
    return (*REGISTERED, *PROMPT_KINDS)


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
    odd = [
        f"{{{name}{'!' + conv if conv else ''}{':' + spec if spec else ''}}}"
        for name, spec, conv in fields
        if name or spec or conv
    ]
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
        return {
            "kind": self.kind,
            "model": self.model,
            "prompt_sha256": self.prompt.sha256 if self.prompt else None,
            "prompt_file": str(self.prompt.path.resolve()) if self.prompt else None,
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.info()})"


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
                atomic_write_json(
                    paths[i],
                    {
                        "judge": self.identity(),
                        "prompt_sha256": self.prompt.sha256,
                        "image_content": content,
                        "question": question,
                        "gt_answer": gt_answer,
                        "model_answer": answer,
                        "reply": reply,
                    },
                )
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

    record = read_json(path)
    if not isinstance(record, dict) or not isinstance(record.get("reply"), str):
        raise PovidError(f"{path}: cached judge reply without a 'reply' string; delete the file to ask again")
    return record["reply"]


class OpenAIJudge(CachedJudge):
    """An OpenAI-compatible chat endpoint (see the module docstring)."""

    kind = "openai"
    workers = 8
    max_tokens = None  # no cap, as LLaVA-RLHF's evaluation asks: a capped reply may lose its rating

    def __init__(
        self,
        model: str,
        prompt: JudgePrompt,
        cache_dir: Path | None,
        base_url: str = DEFAULT_BASE_URL,
        key_env: str = DEFAULT_KEY_ENV,
        workers: int | None = None,
    ):
        from povid_eval.core.http import ChatClient

        super().__init__(model, prompt, cache_dir)
        self.client = ChatClient(base_url, model, api_key_env=key_env, temperature=0.0, max_tokens=self.max_tokens)
        self.base_url = self.client.base_url
        if workers is not None:
            self.workers = workers

    def identity(self) -> dict:
        return {
            "kind": self.kind,
            "model": self.model,
            "base_url": self.base_url,
            "temperature": 0.0,
            "max_tokens": self.max_tokens,
        }

    def info(self) -> dict:
        return {**super().info(), "base_url": self.base_url}

    def ask(self, prompt: str) -> str:
        return self.client.chat([{"role": "user", "content": prompt}])


class HFJudge(CachedJudge):
    """A local causal LM (see the module docstring), loaded on first use: cached replies need no model."""

    kind = "hf"

    def __init__(
        self, model: str, prompt: JudgePrompt, cache_dir: Path | None, folder: Path, max_new_tokens: int = 256
    ):
        import torch

        super().__init__(model, prompt, cache_dir)
        self.folder, self.max_new_tokens = folder, max_new_tokens
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self._loaded = None
        self._load_lock = threading.Lock()
        # the folder's files by name, size and mtime: a model retrained in place gets new cache entries
        files = sorted(p for p in folder.iterdir() if p.is_file())
        fingerprint = hashlib.sha256(
            "\n".join(f"{p.name} {p.stat().st_size} {p.stat().st_mtime_ns}" for p in files).encode()
        ).hexdigest()[:16]
        self._identity = {
            "kind": self.kind,
            "model": model,
            "files": fingerprint,
            "max_new_tokens": max_new_tokens,
            "device": self.device,
        }

    def identity(self) -> dict:
        return self._identity

    def _load(self):
        with self._load_lock:
            if self._loaded is None:
                from transformers import AutoModelForCausalLM, AutoTokenizer

                try:
                    tokenizer = AutoTokenizer.from_pretrained(
                        self.folder, local_files_only=True, trust_remote_code=False
                    )
                    model = AutoModelForCausalLM.from_pretrained(
                        self.folder, local_files_only=True, trust_remote_code=False, dtype="auto"
                    )
                except (OSError, ValueError) as e:
                    raise InputError(
                        self.folder, f"cannot load the hf judge as a causal LM: {' '.join(str(e).split())[:300]}"
                    ) from None
                model.to(self.device).eval()
                self._loaded = (tokenizer, model)
        return self._loaded

    def ask(self, prompt: str) -> str:
        import torch

        tokenizer, model = self._load()
        if getattr(tokenizer, "chat_template", None):
            text = tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
            )
            enc = tokenizer(text, add_special_tokens=False, return_tensors="pt")
        else:
            enc = tokenizer(prompt, return_tensors="pt")
        enc = {k: v.to(model.device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=self.max_new_tokens, do_sample=False, pad_token_id=pad)
        return tokenizer.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True).strip()


def build_judge(
    kind: str,
    *,
    model: str = "",
    base_url: str = "",
    key_env: str = "",
    judge_prompt: str | Path | None = None,
    cache_dir: str | Path | None = None,
    model_folder: str | Path | None = None,
    where: str | None = None,
) -> Judge:
    """A judge from its settings (a bench card's judge_* fields, or the command line's). Paths are used as
    given (relative to the cwd); ``model_folder``: where the hf judge's ``model`` is (default: ``model``).
    ``where`` names the source in errors (e.g. the bench card)."""
    if kind not in kinds():
        raise InputError(where, f"unknown MMHal judge '{kind}' (known: {', '.join(kinds())})")
    if kind in REGISTERED:
        if judge_prompt:
            raise InputError(where, f"the {kind} judge uses no prompt; a judge prompt needs judge = openai or hf")
        return REGISTERED[kind]()
    if not model:
        raise InputError(
            where, f"the {kind} judge needs a model (judge_model in the bench card, --judge-model on the command line)"
        )
    prompt = load_judge_prompt(judge_prompt)
    if cache_dir is None:
        cache_dir = default_cache() / "judge"
    if kind == "openai":
        return OpenAIJudge(
            model, prompt, Path(cache_dir), base_url=base_url or DEFAULT_BASE_URL, key_env=key_env or DEFAULT_KEY_ENV
        )
    folder = Path(model_folder if model_folder is not None else model).expanduser()
    if not folder.is_dir():
        raise MissingAssetError(
            f"{folder}: the hf judge's model folder is not there (judge_model must be a local causal LM folder)"
        )
    return HFJudge(model, prompt, Path(cache_dir), folder)


def make_judge(card, *, judge_prompt: str | Path | None = None, cache_dir: str | Path | None = None) -> Judge:
    """The judge a bench card names (``judge``, ``judge_model``, ``judge_base_url``, ``judge_key_env``,
    ``judge_prompt``). ``judge_prompt`` (a path as given) overrides the card's (relative to the project root);
    ``cache_dir`` defaults to $POVID_EVAL_CACHE/judge."""

    o = card.options
    if judge_prompt is not None and o.judge in REGISTERED:
        raise InputError(
            None,
            f"--judge-prompt: bench card '{card.name}': the {o.judge} judge uses no prompt (a judge "
            "prompt needs judge = openai or hf)",
        )
    if judge_prompt is None and o.judge_prompt:
        judge_prompt = project(o.judge_prompt)
    return build_judge(
        o.judge,
        model=o.judge_model,
        base_url=o.judge_base_url,
        key_env=o.judge_key_env,
        judge_prompt=judge_prompt,
        cache_dir=cache_dir,
        model_folder=project(o.judge_model) if o.judge_model else None,
        where=f"bench card '{card.name}'",
    )


def judge_all(judge: Callable[[dict], str], records: Sequence[dict]) -> list[str]:
    """Replies of any judge: a Judge's judge_all, or a plain callable(record) -> reply per record."""
    if isinstance(judge, Judge):
        return judge.judge_all(records)
    return [judge(r) for r in records]


def describe(judge: Callable[[dict], str]) -> dict:
    """metrics.json's ``judge`` record: {kind, model, prompt_sha256, ...} (a plain callable: kind 'custom')."""
    if isinstance(judge, Judge):
        return judge.info()
    return {
        "kind": "custom",
        "model": getattr(judge, "__name__", type(judge).__name__),
        "prompt_sha256": None,
        "prompt_file": None,
    }
