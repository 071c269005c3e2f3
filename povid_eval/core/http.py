"""A small client for OpenAI-compatible chat endpoints (vLLM, SGLang, hosted APIs), stdlib only.

Protocol, one request:

    POST {base_url}/chat/completions
    body     {"model", "messages", "temperature", "max_tokens" (unless None), **overrides}     (json)
    headers  Content-Type: application/json; Authorization: Bearer $KEY (only when api_key_env is given)
    answer   choices[0].message.content

The key is read from the environment variable named by ``api_key_env`` when a request is sent, never
stored on the client, and never written to caches, logs, exceptions or results: every message the client
makes (ChatAPIError, hence also its log warnings) goes through ChatAPIError's constructor, which replaces the
key, its JSON-escaped and its URL-quoted forms by ``***`` (``redact``), so an answer that echoes it shows none.

Redirects: every request goes through one opener, ``open_endpoint`` (also used by ``povid-eval doctor``'s
``GET {base_url}/models`` probe). A redirect to another origin (scheme, host, port; so also https -> http)
is never followed: it fails at once with RedirectRefused, naming the other origin and saying the key was not
sent there (set base_url to the final address). A same-origin redirect is followed with the same method, body
and headers (the key included); a POST is never turned into a GET (a 303 to a POST is refused too).

Retries: HTTP 429, 5xx, connection errors and timeouts are retried up to ``max_retries`` times; the wait
before retry k (0-based) is ``min(max_backoff, backoff * 2**k)``, or the server's ``Retry-After`` (seconds
or an HTTP date), capped at ``max_backoff``, each retry logged as a warning. Any other 4xx (and a refused
redirect) fails at once. Both raise ChatAPIError, a one-line PovidError: URL, status, a short excerpt of the
body.

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
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from PIL import Image

from povid_eval.core.checks import Check
from povid_eval.core.errors import MissingAssetError, PovidError
from povid_eval.core.io import atomic_write_json, read_json

log = logging.getLogger(__name__)

Message = dict[str, Any]
RETRYABLE_STATUS = frozenset({429}) | frozenset(range(500, 600))
EXCERPT_CHARS = 200


class ChatAPIError(PovidError):
    """A chat request failed: ``URL: HTTP status: detail`` (or ``URL: detail``), one line.

    The one place where text from the wire becomes a message: every form of ``secret`` (the key) is redacted
    from url and detail, then the detail is cut to one line of at most EXCERPT_CHARS (after redacting, so no
    piece of the key survives the cut)."""

    def __init__(self, url: str, status: int | None, detail: str, secret: str | None = None):
        self.url, self.status = redact(url, secret), status
        self.detail = _one_line(redact(detail, secret))
        where = f"{self.url}: HTTP {status}" if status is not None else self.url
        super().__init__(f"{where}: {self.detail}")


class RedirectRefused(ChatAPIError):
    """The endpoint redirected somewhere the request is not sent again (another origin, or a POST to a GET)."""


def _one_line(text: str, limit: int = EXCERPT_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def secret_forms(secret: str) -> list[str]:
    """The ways an echo may spell secret: raw, JSON-escaped (also with ``\\/``), URL-quoted; longest first."""
    escaped = json.dumps(secret)[1:-1]
    forms = {
        secret,
        escaped,
        escaped.replace("/", "\\/"),
        json.dumps(secret, ensure_ascii=False)[1:-1],
        urllib.parse.quote(secret),
        urllib.parse.quote(secret, safe=""),
        urllib.parse.quote_plus(secret),
    }
    return sorted(forms, key=len, reverse=True)


def redact(text: str, secret: str | None) -> str:
    """text with every form of secret (``secret_forms``, any letter case) replaced by ``***``."""
    if not secret:
        return text
    pattern = "|".join(re.escape(form) for form in secret_forms(secret))
    return re.sub(pattern, "***", text, flags=re.IGNORECASE)


# --- the one opener --------------------------------------------------------------------------------------


def origin(url: str) -> str:
    """``scheme://host:port`` of url, lower case, with the scheme's default port filled in."""
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:  # a port that is not a number: an origin of its own
        return f"{scheme}://{parts.netloc.lower()}"
    port = port if port is not None else {"http": 80, "https": 443}.get(scheme)
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host  # IPv6
    return f"{scheme}://{host}" + (f":{port}" if port is not None else "")


def redirect_refusal(url: str, new_url: str, method: str, code: int) -> str | None:
    """Why the redirect (code) of a method request from url to new_url is not followed; None to follow it."""
    if origin(new_url) != origin(url):
        return (
            f"the endpoint redirected to {origin(new_url)}, another origin; the key was not sent there: "
            f"set base_url to the final address"
        )
    if code == 303 and method not in ("GET", "HEAD"):
        return (
            f"the endpoint answered the {method} with 303 See Other, which would turn it into a GET; not "
            f"followed: set base_url to the final address"
        )
    return None


class _Refused(Exception):
    """Raised inside the opener (which knows neither base_url nor the key); open_endpoint makes it an error."""

    def __init__(self, code: int, reason: str):
        super().__init__(reason)
        self.code, self.reason = code, reason


class SameOriginRedirects(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only within the origin, as the same request (method, body, headers); see
    redirect_refusal. urllib's own handler would send the headers (the key) to any host, as a GET."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        """urllib's hook: the same request to newurl, or _Refused (the response closed, nothing sent)."""
        reason = redirect_refusal(req.full_url, newurl, req.get_method(), code)
        if reason is not None:
            fp.close()
            raise _Refused(code, reason)
        return urllib.request.Request(
            newurl,
            data=req.data,
            headers=dict(req.headers),
            method=req.get_method(),
            origin_req_host=req.origin_req_host,
            unverifiable=True,
        )


def build_opener() -> urllib.request.OpenerDirector:
    """urllib's default opener (proxies from the environment now), with SameOriginRedirects."""
    return urllib.request.build_opener(SameOriginRedirects)


def open_endpoint(url: str, key: str | None, timeout: float, data: bytes | None = None):
    """Send one request, ``POST`` json data or (data None) ``GET``, with ``Authorization: Bearer key`` when key
    is given, through build_opener(). The response (a context manager), or urllib's errors as urlopen raises
    them, or RedirectRefused (nothing sent to the new address)."""
    headers = {"Accept": "application/json"}
    if data is not None:
        headers["Content-Type"] = "application/json"
    if key:
        headers["Authorization"] = f"Bearer {key}"
    request = urllib.request.Request(url, data=data, headers=headers, method="GET" if data is None else "POST")
    try:
        return build_opener().open(request, timeout=timeout)
    except _Refused as refused:
        raise RedirectRefused(url, refused.code, refused.reason, secret=key) from None


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

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 5,
        backoff: float = 1.0,
        cache_dir: str | Path | None = None,
        temperature: float = 0.0,
        max_tokens: int | None = 512,
        max_backoff: float = 60.0,
        sleep: Callable[[float], None] = time.sleep,
    ):
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
        return (
            f"ChatClient(base_url={self.base_url!r}, model={self.model!r}, api_key_env={self.api_key_env!r}, "
            f"cache_dir={str(self.cache_dir) if self.cache_dir else None!r})"
        )

    # --- public -------------------------------------------------------------------------------------
    def request_body(self, messages: Sequence[Message], **overrides: Any) -> dict[str, Any]:
        """The json body sent for messages; overrides (temperature, max_tokens, seed, stop, ...) win."""
        body = {"model": self.model, "messages": list(messages), "temperature": self.temperature}
        if self.max_tokens is not None:  # None: no cap, the reply ends where the model ends
            body["max_tokens"] = self.max_tokens
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
        content = self._post(body)
        if path is not None:
            record = {"base_url": self.base_url, "request": _without_image_data(body), "content": content}
            atomic_write_json(path, record)
        return content

    def chat_many(self, conversations: Sequence[Sequence[Message]], workers: int = 4, **overrides: Any) -> list[str]:
        """chat() for each conversation with at most ``workers`` in flight; answers in input order."""
        return list(self.chat_stream([lambda m=m: m for m in conversations], workers, **overrides))

    def chat_stream(
        self, conversations: Iterable[Callable[[], Sequence[Message]]], workers: int = 4, **overrides: Any
    ) -> Iterator[str]:
        """chat() for each conversation, built lazily by its callable on a worker thread, with at most
        ``workers`` requests in flight at any time and the next ones starting as soon as a slot frees (no
        barrier between groups); answers yielded in input order. At most ``4 * workers`` conversations are
        pending at once, so a long input holds little in memory. An error is raised at its place in order."""
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        pending: deque = deque()
        source = iter(conversations)
        with ThreadPoolExecutor(max_workers=workers) as pool:
            try:
                while True:
                    while len(pending) < 4 * workers:
                        build = next(source, None)
                        if build is None:
                            break
                        pending.append(pool.submit(lambda b=build: self.chat(b(), **overrides)))
                    if not pending:
                        return
                    yield pending.popleft().result()
            finally:
                for future in pending:
                    future.cancel()

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
        return min(self.max_backoff, self.backoff * 2**attempt)

    def _post(self, body: dict[str, Any]) -> str:
        """POST body with retries; the answer's content, or ChatAPIError (every one made here, with the key)."""
        key = self._api_key()
        data = json.dumps(body).encode("utf-8")
        for attempt in range(self.max_retries + 1):
            status, detail, retry_after = self._attempt(data, key)
            if status == 200:
                return _content_of(detail, self.url, key)
            retryable = status is None or status in RETRYABLE_STATUS
            last = not retryable or attempt == self.max_retries
            if last and retryable and self.max_retries:
                detail = f"gave up after {attempt + 1} attempts: {detail}"
            error = ChatAPIError(self.url, status, detail, secret=key)
            if last:
                raise error
            wait = self._delay(attempt, retry_after)
            log.warning("%s; retry %d/%d in %.1fs", error, attempt + 1, self.max_retries, wait)
            self.sleep(wait)
        raise AssertionError("unreachable")

    def _attempt(self, data: bytes, key: str | None) -> tuple[int | None, Any, float | None]:
        """One POST: (200, json, None), (status, body, Retry-After seconds) or (None, error, None).

        The texts are raw (the key not yet redacted): they may only reach a message through ChatAPIError."""
        try:
            with open_endpoint(self.url, key, self.timeout, data) as response:
                raw = response.read()
        except urllib.error.HTTPError as e:
            return e.code, _error_body(e).strip() or "(empty body)", parse_retry_after(e.headers.get("Retry-After"))
        except urllib.error.URLError as e:
            return None, f"connection failed: {e.reason}", None
        except TimeoutError as e:  # socket.timeout while reading the answer
            return None, f"timed out after {self.timeout}s ({e})", None
        except (OSError, http.client.HTTPException) as e:  # reset, remote closed or garbled mid-response
            return None, f"connection failed: {type(e).__name__}: {e}", None
        try:
            return 200, json.loads(raw), None
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ChatAPIError(
                self.url, 200, f"answer is not JSON: {raw.decode('utf-8', 'replace')}", secret=key
            ) from None


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
        return f"{obj[: obj.index(';base64,')]};sha256,{hashlib.sha256(obj.encode()).hexdigest()}"
    return obj


def _content_of(answer: Any, url: str, key: str | None) -> str:
    """choices[0].message.content of an OpenAI chat answer (a list of text parts is joined)."""
    try:
        content = answer["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise ChatAPIError(
            url, 200, f"no choices[0].message.content in the answer: {json.dumps(answer)}", secret=key
        ) from None
    if isinstance(content, list):
        content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
    if not isinstance(content, str):
        raise ChatAPIError(url, 200, f"choices[0].message.content is {type(content).__name__}, not text", secret=key)
    return content


# --- `povid-eval doctor`'s probe of an endpoint ---------------------------------------------------------

PROBE_TIMEOUT_S = 5.0


def probe_endpoint(base_url: str, key_env: str, asset: str) -> list[Check]:
    """Key presence and ``GET {base_url}/models`` (5 s): reachable, and the key accepted.

    The GET goes through the chat client's opener (open_endpoint): a redirect to another origin
    fails the check and the key is not sent there; the key is redacted from every detail."""
    out = []
    key = os.environ.get(key_env) if key_env else None
    if key_env:
        out.append(
            Check(
                f"{asset} key",
                bool(key),
                f"${key_env} " + ("is set" if key else "is not set"),
                f"export {key_env}=<your key>",
            )
        )

    def endpoint(ok: bool, detail: str, fix: str = "") -> Check:
        return Check(f"{asset} endpoint", ok, redact(detail, key), fix)

    try:
        with open_endpoint(base_url.rstrip("/") + "/models", key, PROBE_TIMEOUT_S) as response:
            out.append(endpoint(True, f"{base_url} answers (HTTP {response.status})"))
    except urllib.error.HTTPError as e:
        ok = e.code not in (401, 403)
        out.append(
            endpoint(
                ok,
                f"{base_url} answers HTTP {e.code}" + ("" if ok else ": the key was refused"),
                f"check ${key_env or 'the key'}",
            )
        )
    except ChatAPIError as e:  # a redirect refused (another origin): one line that says so, the key redacted
        out.append(endpoint(False, str(e)))
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        reason = getattr(e, "reason", e)
        out.append(
            endpoint(
                False,
                f"{base_url} unreachable ({reason})",
                "start the server or check base_url (and that this node can reach it)",
            )
        )
    return out
