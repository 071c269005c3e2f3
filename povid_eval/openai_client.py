"""A small client for OpenAI-compatible chat endpoints (vLLM, SGLang, hosted APIs), stdlib only.

Protocol, one request:

    POST {base_url}/chat/completions
    body     {"model", "messages", "temperature", "max_tokens", **overrides}     (json)
    headers  Content-Type: application/json; Authorization: Bearer $KEY (only when api_key_env is given)
    answer   choices[0].message.content

The key is read from the environment variable named by ``api_key_env`` when a request is sent, never
stored on the client, and never written to caches, logs, exceptions or results (an error body that echoes
it is redacted).

Retries: HTTP 429, 5xx, connection errors and timeouts are retried up to ``max_retries`` times; the wait
before retry k (0-based) is ``min(max_backoff, backoff * 2**k)``, or the server's ``Retry-After`` (seconds
or an HTTP date), capped at ``max_backoff``. Any other 4xx fails at once. Both raise ChatAPIError, a one-line
PovidError: URL, status, a short excerpt of the body.

Cache: with ``cache_dir``, every answer lives in ``cache_dir/<sha256>.json``, where the hash is taken over
the canonical json (sorted keys, compact) of ``{"base_url", "request": body}``, the key excluded. Files are
written atomically, so a rerun (or a killed one resumed) sends no request for an answer it already has.
A cache file records base_url, the request (each base64 image replaced by the sha256 of its data URL) and
the answer's content.

Images: ``image_content(image, text)`` builds a user message's content list with the image as a base64
``data:image/png;base64,...`` URL, image first (LLaVA's "<image>\\n{question}" order).
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import http.client
import io
import json
import logging
import os
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Sequence

from PIL import Image

from povid_eval.errors import MissingAssetError, PovidError
from povid_eval.io import atomic_write_json, read_json

log = logging.getLogger(__name__)

Message = dict[str, Any]
RETRYABLE_STATUS = frozenset({429}) | frozenset(range(500, 600))
EXCERPT_CHARS = 200


class ChatAPIError(PovidError):
    """A chat request failed: ``URL: HTTP status: body excerpt`` (or the connection error), one line."""

    def __init__(self, url: str, status: int | None, detail: str):
        self.url, self.status, self.detail = url, status, detail
        where = f"{url}: HTTP {status}" if status is not None else url
        super().__init__(f"{where}: {detail}")


def _one_line(text: str, limit: int = EXCERPT_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _redact(text: str, secret: str | None) -> str:
    return text.replace(secret, "***") if secret else text


def canonical_json(obj: Any) -> str:
    """The json the cache key is hashed over: sorted keys, no whitespace, non-ASCII kept."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date); None if absent/unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def image_content(image: Image.Image | str | Path, text: str) -> list[dict[str, Any]]:
    """OpenAI content list ``[image_url (data:image/png;base64,...), text]`` for one image and a text."""
    if not isinstance(image, Image.Image):
        with Image.open(image) as opened:
            opened.load()
            image = opened.copy()
    if image.mode not in ("1", "L", "LA", "I", "P", "RGB", "RGBA"):
        image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
    return [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": text}]


class ChatClient:
    """``chat(messages) -> str`` against ``{base_url}/chat/completions``; see the module docstring."""

    def __init__(self, base_url: str, model: str, api_key_env: str | None = None, timeout: float = 60.0,
                 max_retries: int = 5, backoff: float = 1.0, cache_dir: str | Path | None = None,
                 temperature: float = 0.0, max_tokens: int = 512, max_backoff: float = 60.0,
                 sleep: Callable[[float], None] = time.sleep):
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        self.base_url = base_url.rstrip("/")
        self.url = self.base_url + "/chat/completions"
        self.model, self.api_key_env = model, api_key_env
        self.timeout, self.max_retries = timeout, max_retries
        self.backoff, self.max_backoff, self.sleep = backoff, max_backoff, sleep
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.temperature, self.max_tokens = temperature, max_tokens

    def __repr__(self) -> str:
        return (f"ChatClient(base_url={self.base_url!r}, model={self.model!r}, api_key_env={self.api_key_env!r}, "
                f"cache_dir={str(self.cache_dir) if self.cache_dir else None!r})")

    # --- public -------------------------------------------------------------------------------------
    def request_body(self, messages: Sequence[Message], **overrides: Any) -> dict[str, Any]:
        """The json body sent for messages; overrides (temperature, max_tokens, seed, stop, ...) win."""
        body = {"model": self.model, "messages": list(messages), "temperature": self.temperature,
                "max_tokens": self.max_tokens}
        body.update(overrides)
        return body

    def cache_path(self, body: dict[str, Any]) -> Path | None:
        """Where the answer to body is cached (None without cache_dir): sha256 of base_url + body, no key."""
        if self.cache_dir is None:
            return None
        digest = hashlib.sha256(canonical_json({"base_url": self.base_url, "request": body}).encode()).hexdigest()
        return self.cache_dir / f"{digest}.json"

    def chat(self, messages: Sequence[Message], **overrides: Any) -> str:
        """The first choice's message content for messages, from the cache or the endpoint."""
        body = self.request_body(messages, **overrides)
        path = self.cache_path(body)
        if path is not None and path.is_file():
            return self._read_cached(path)
        content = _content_of(self._post(body), self.url)
        if path is not None:
            record = {"base_url": self.base_url, "request": _without_image_data(body), "content": content}
            atomic_write_json(path, record)
        return content

    def chat_many(self, conversations: Sequence[Sequence[Message]], workers: int = 4,
                  **overrides: Any) -> list[str]:
        """chat() for each conversation with at most ``workers`` in flight; answers in input order."""
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(lambda messages: self.chat(messages, **overrides), conversations))

    # --- internals ----------------------------------------------------------------------------------
    def _read_cached(self, path: Path) -> str:
        record = read_json(path)
        if not isinstance(record, dict) or not isinstance(record.get("content"), str):
            raise PovidError(f"{path}: cached chat answer without a 'content' string; delete the file to re-ask")
        return record["content"]

    def _api_key(self) -> str | None:
        if self.api_key_env is None:
            return None
        key = os.environ.get(self.api_key_env)
        if not key:
            raise MissingAssetError(f"{self.url}: environment variable {self.api_key_env} (the API key) is not set")
        return key

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(self.max_backoff, retry_after)
        return min(self.max_backoff, self.backoff * 2 ** attempt)

    def _post(self, body: dict[str, Any]) -> Any:
        """POST body with retries; the decoded json answer, or ChatAPIError."""
        key = self._api_key()
        data = json.dumps(body).encode("utf-8")
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        for attempt in range(self.max_retries + 1):
            status, detail, retry_after = self._attempt(data, headers, key)
            if status == 200:
                return detail
            retryable = status is None or status in RETRYABLE_STATUS
            if not retryable or attempt == self.max_retries:
                if retryable and self.max_retries:
                    detail = f"gave up after {attempt + 1} attempts: {detail}"
                raise ChatAPIError(self.url, status, detail)
            wait = self._delay(attempt, retry_after)
            log.warning("%s: %s; retry %d/%d in %.1fs", self.url, f"HTTP {status}" if status else detail,
                        attempt + 1, self.max_retries, wait)
            self.sleep(wait)
        raise AssertionError("unreachable")

    def _attempt(self, data: bytes, headers: dict[str, str], key: str | None) -> tuple[int | None, Any, float | None]:
        """One POST: (200, json, None), (status, body excerpt, Retry-After seconds) or (None, error, None)."""
        request = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as e:
            text = _redact(_error_body(e), key)
            return e.code, _one_line(text) or "(empty body)", parse_retry_after(e.headers.get("Retry-After"))
        except urllib.error.URLError as e:
            return None, _redact(_one_line(f"connection failed: {e.reason}"), key), None
        except TimeoutError as e:  # socket.timeout while reading the answer
            return None, f"timed out after {self.timeout}s ({e})", None
        except (OSError, http.client.HTTPException) as e:  # reset, remote closed or garbled mid-response
            return None, _redact(_one_line(f"connection failed: {type(e).__name__}: {e}"), key), None
        try:
            return 200, json.loads(raw), None
        except (json.JSONDecodeError, UnicodeDecodeError):
            excerpt = _one_line(_redact(raw.decode("utf-8", "replace"), key))
            raise ChatAPIError(self.url, 200, f"answer is not JSON: {excerpt}") from None


def _error_body(error: urllib.error.HTTPError) -> str:
    try:
        return error.read().decode("utf-8", "replace")
    except (OSError, http.client.HTTPException):
        return ""


def _without_image_data(obj: Any) -> Any:
    """A copy of obj with each ``data:...;base64,`` URL replaced by the sha256 of its text (small cache files)."""
    if isinstance(obj, dict):
        return {k: _without_image_data(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_without_image_data(v) for v in obj]
    if isinstance(obj, str) and obj.startswith("data:") and ";base64," in obj[:64]:
        return f"{obj[:obj.index(';base64,')]};sha256,{hashlib.sha256(obj.encode()).hexdigest()}"
    return obj


def _content_of(answer: Any, url: str) -> str:
    """choices[0].message.content of an OpenAI chat answer (a list of text parts is joined)."""
    try:
        content = answer["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise ChatAPIError(url, 200, f"no choices[0].message.content in the answer: "
                                     f"{_one_line(json.dumps(answer))}") from None
    if isinstance(content, list):
        content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
    if not isinstance(content, str):
        raise ChatAPIError(url, 200, f"choices[0].message.content is {type(content).__name__}, not text")
    return content
