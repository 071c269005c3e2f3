"""A loopback OpenAI-compatible chat server for tests (stdlib only; real HTTP on 127.0.0.1).

    with ChatServer(answer) as server:        # answer(body: dict) -> str, the reply's content
        client = ChatClient(server.url, ...)  # server.url == "http://127.0.0.1:PORT/v1"
        server.script.append((429, {"Retry-After": "0"}, "slow down"))   # next POST fails so
        server.redirects["/old/v1/models"] = (307, server.url + "/models")  # GETs and POSTs there redirected
        ...
        server.requests    # every POST received: {"path", "headers", "body"} (failed ones too)
        server.gets        # every GET received: {"path", "headers"}
        server.max_in_flight   # most POSTs seen at once (received, not yet answered)

``POST /v1/chat/completions`` answers ``{"choices": [{"message": {"content": answer(body)}}], ...}``;
``GET /v1/models`` lists one model, ``server.model`` (what ``povid-eval doctor`` probes); any other path is
a 404. ``ChatServer(answer, key="sk-...")`` answers 401 to any request without ``Authorization: Bearer
sk-...``. A ``script`` entry is consumed by one request before answering: ``(status, headers, text)``
sends that response instead, ``("hang", seconds)`` stalls, then answers. A request (GET or POST) to a path
in ``redirects`` (``{path: (status, location)}``, path as sent, query included) is answered with that status,
a ``Location: location`` header and an empty body, before any key check, and consumes no script entry;
``server.origin`` is ``http://127.0.0.1:PORT`` (``server.url`` without ``/v1``). ``answer`` runs on the server's
handler threads (one per request), concurrently: guard shared state with a lock. An exception in it becomes
an HTTP 500 and is kept in ``server.errors``.

Helpers for answer functions: ``user_text(body)`` (the last user message's text parts) and
``user_image(body)`` (its first image, decoded from the base64 data URL). Call ``clear_proxies(monkeypatch)``
in tests so that no http_proxy variable reroutes loopback requests.
"""

from __future__ import annotations

import base64
import io
import json
import threading
import time
import traceback
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PROXY_VARS = ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY")


def clear_proxies(monkeypatch) -> None:
    """Unset the proxy variables for this test (urllib would send loopback requests through a proxy)."""
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)


def _last_user_content(body: dict) -> Any:
    return [m for m in body["messages"] if m["role"] == "user"][-1]["content"]


def user_text(body: dict) -> str:
    """The text of the last user message (its text parts joined by a space)."""
    content = _last_user_content(body)
    if isinstance(content, str):
        return content
    return " ".join(part["text"] for part in content if part.get("type") == "text")


def user_image(body: dict):
    """The first image of the last user message, as a PIL image (decoded from its base64 data URL)."""
    from PIL import Image

    content = _last_user_content(body)
    url = next(part["image_url"]["url"] for part in content if part.get("type") == "image_url")
    data = base64.b64decode(url.split(";base64,", 1)[1])
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return image.copy()


class ChatServer:
    """A running loopback chat server while inside ``with``; see the module docstring."""

    def __init__(
        self,
        answer: Callable[[dict], str] = lambda body: "echo: " + user_text(body),
        key: str | None = None,
        model: str = "test-model",
    ):
        self.answer, self.key, self.model = answer, key, model
        self.requests: list[dict[str, Any]] = []
        self.gets: list[dict[str, Any]] = []
        self.script: list[tuple] = []
        self.redirects: dict[str, tuple[int, str]] = {}
        self.errors: list[str] = []
        self.in_flight = self.max_in_flight = 0
        self.lock = threading.Lock()
        self.url = self.origin = ""
        self._httpd: ThreadingHTTPServer | None = None

    def __enter__(self) -> ChatServer:
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.chat = self  # type: ignore[attr-defined]
        self.origin = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self.url = self.origin + "/v1"
        threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True).start()
        return self

    def __exit__(self, *exc: Any) -> None:
        assert self._httpd is not None
        self._httpd.shutdown()
        self._httpd.server_close()

    def bodies(self) -> list[dict]:
        """The json bodies of the requests received so far."""
        with self.lock:
            return [r["body"] for r in self.requests]


class _Handler(BaseHTTPRequestHandler):
    def _refused(self, server: ChatServer) -> bool:
        return server.key is not None and self.headers.get("Authorization") != f"Bearer {server.key}"

    def _redirected(self, server: ChatServer) -> bool:
        """Answer the redirect configured for this path, if any (True then)."""
        moved = server.redirects.get(self.path)
        if moved is not None:
            self._send(moved[0], {"Location": moved[1]}, "")
        return moved is not None

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        server: ChatServer = self.server.chat  # type: ignore[attr-defined]
        with server.lock:
            server.gets.append({"path": self.path, "headers": dict(self.headers)})
        if self._redirected(server):
            return
        if self._refused(server):
            return self._send(401, {}, "invalid api key")
        if self.path.rstrip("/") != "/v1/models":
            return self._send(404, {}, f"no route {self.path}")
        models = {"object": "list", "data": [{"id": server.model, "object": "model", "owned_by": "test"}]}
        self._send(200, {"Content-Type": "application/json"}, json.dumps(models))

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        server: ChatServer = self.server.chat  # type: ignore[attr-defined]
        raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        try:
            body = json.loads(raw)
        except json.JSONDecodeError:
            return self._send(400, {}, "body is not json")
        with server.lock:
            server.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
        if self._redirected(server):
            return
        with server.lock:
            step = server.script.pop(0) if server.script else None
            server.in_flight += 1
            server.max_in_flight = max(server.max_in_flight, server.in_flight)
        try:
            # in_flight drops before the reply is written: a client cannot send its next request earlier
            status, headers, text = self._reply(server, body, step)
        finally:
            with server.lock:
                server.in_flight -= 1
        try:
            self._send(status, headers, text)
        except (BrokenPipeError, ConnectionResetError):  # the client timed out and left
            pass

    def _reply(self, server: ChatServer, body: dict, step: tuple | None) -> tuple[int, dict, str]:
        if self._refused(server):
            return 401, {}, "invalid api key"
        if self.path.rstrip("/") != "/v1/chat/completions":
            return 404, {}, f"no route {self.path}"
        if step and step[0] == "hang":
            time.sleep(step[1])
        elif step:
            return step
        try:
            content = server.answer(body)
        except Exception:  # noqa: BLE001 (reported to the test through server.errors)
            with server.lock:
                server.errors.append(traceback.format_exc())
            return 500, {}, "answer() failed"
        answer = {
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "created": 0,
            "model": body.get("model", ""),
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}],
        }
        return 200, {"Content-Type": "application/json"}, json.dumps(answer)

    def _send(self, status: int, headers: dict[str, str], text: str) -> None:
        data = text.encode()
        self.send_response(status)
        for name, value in {"Content-Length": str(len(data)), **headers}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass
