"""The API key against hostile or misconfigured endpoints, over real loopback HTTP (tests/chat_server.py):
a redirect to another origin never carries the key (the chat client's POST and the doctor's GET probe), a
same-origin one is followed as the same request, and no message (exception, log record) shows the key in any
spelling the server may echo it in (raw, JSON-escaped, URL-quoted)."""

from __future__ import annotations

import json
import logging
import urllib.parse
from pathlib import Path

import pytest
from chat_server import ChatServer, clear_proxies

from povid_eval.core import http
from povid_eval.core.http import ChatAPIError, ChatClient

KEY_ENV = "POVID_TEST_SECURITY_KEY"
KEY = 'sk-sec-"4e7a"\\9+c/d0-secret'  # JSON-escaping and URL-quoting both change it
SPELLINGS = {
    "raw": KEY,
    "json": json.dumps(KEY)[1:-1],
    "quoted": urllib.parse.quote(KEY, safe=""),
    "quote_plus": urllib.parse.quote_plus(KEY),
}
REDIRECTS = [301, 302, 303, 307, 308]


def leaked(text: str) -> list[str]:
    """The spellings of KEY found in text."""
    return [name for name, form in SPELLINGS.items() if form in text]


@pytest.fixture
def servers(monkeypatch):
    """Server A (the configured endpoint) and server B (another origin: another port), both recording."""
    clear_proxies(monkeypatch)
    monkeypatch.setenv(KEY_ENV, KEY)
    with ChatServer() as a, ChatServer() as b:
        yield a, b


@pytest.fixture
def sleeps() -> list[float]:
    return []


def client(base_url: str, tmp_path: Path, sleeps: list[float], **options) -> ChatClient:
    options = {
        "api_key_env": KEY_ENV,
        "cache_dir": tmp_path / "cache",
        "max_retries": 2,
        "sleep": sleeps.append,
        **options,
    }
    return ChatClient(base_url, "m", **options)


def cached(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "cache").glob("*")) if (tmp_path / "cache").is_dir() else []


def hi() -> list[dict]:
    return [{"role": "user", "content": "hi"}]


def assert_b_got_no_key(b: ChatServer) -> None:
    assert not any(leaked(json.dumps(r["headers"])) for r in b.requests + b.gets)
    assert not any("Authorization" in r["headers"] for r in b.requests + b.gets)
    assert b.requests == [] and b.gets == []  # nothing at all reached the other origin


def assert_redirect_refused(message: str, b: ChatServer) -> None:
    assert "\n" not in message and not leaked(message)
    assert f"redirected to {b.origin}" in message and "the key was not sent there" in message
    assert "set base_url to the final address" in message


# --- redirects ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("code", REDIRECTS)
def test_post_redirect_to_another_origin_fails_at_once_without_the_key(servers, tmp_path, sleeps, code):
    a, b = servers
    a.redirects["/v1/chat/completions"] = (code, b.url + "/chat/completions")
    with pytest.raises(ChatAPIError) as info:
        client(a.url, tmp_path, sleeps).chat(hi())
    assert_b_got_no_key(b)
    assert_redirect_refused(str(info.value), b)
    assert info.value.status == code
    assert len(a.requests) == 1 and sleeps == []  # not retried
    assert cached(tmp_path) == []


@pytest.mark.parametrize("code", REDIRECTS)
def test_doctor_probe_redirect_to_another_origin_fails_without_the_key(servers, code):
    a, b = servers
    a.redirects["/v1/models"] = (code, b.url + "/models")
    checks = {c.asset: c for c in http.probe_endpoint(a.url, KEY_ENV, "model")}
    assert checks["model key"].ok
    endpoint = checks["model endpoint"]
    assert_b_got_no_key(b)
    assert not endpoint.ok
    assert_redirect_refused(endpoint.line(), b)
    assert [g["headers"].get("Authorization") for g in a.gets] == [f"Bearer {KEY}"]  # A was asked, with the key


@pytest.mark.parametrize("code", [301, 302, 307, 308])
def test_same_origin_redirect_is_followed_as_the_same_post(servers, tmp_path, sleeps, code):
    a, b = servers
    a.redirects["/old/v1/chat/completions"] = (code, "/v1/chat/completions")  # a relative Location
    chat = client(a.origin + "/old/v1", tmp_path, sleeps)
    assert chat.chat(hi()) == "echo: hi"
    first, second = a.requests
    assert [first["path"], second["path"]] == ["/old/v1/chat/completions", "/v1/chat/completions"]
    assert first["body"] == second["body"] == chat.request_body(hi())  # the POST re-sent, never a GET
    assert first["headers"]["Authorization"] == second["headers"]["Authorization"] == f"Bearer {KEY}"
    assert a.gets == [] and b.requests == [] and b.gets == []
    assert len(cached(tmp_path)) == 1


def test_303_to_a_post_is_not_turned_into_a_get(servers, tmp_path, sleeps):
    a, _ = servers
    a.redirects["/old/v1/chat/completions"] = (303, "/v1/chat/completions")
    with pytest.raises(ChatAPIError) as info:
        client(a.origin + "/old/v1", tmp_path, sleeps).chat(hi())
    message = str(info.value)
    assert "\n" not in message and "303 See Other" in message and "GET" in message
    assert "set base_url to the final address" in message
    assert a.gets == [] and len(a.requests) == 1 and sleeps == [] and cached(tmp_path) == []


def test_origin_compares_scheme_host_and_port():
    from povid_eval.core.http import origin, redirect_refusal

    assert (
        origin("HTTPS://API.example.com/v1") == origin("https://api.example.com:443/x") == "https://api.example.com:443"
    )
    assert origin("http://h/v1") == "http://h:80" != origin("https://h/v1")
    assert redirect_refusal("https://h/v1/models", "https://h:443/v2/models", "GET", 301) is None
    downgrade = redirect_refusal("https://h/v1/chat/completions", "http://h/v1/chat/completions", "POST", 307)
    assert downgrade is not None and "redirected to http://h:80" in downgrade  # https -> http: never followed
    assert redirect_refusal("http://h:8000/v1", "http://h:8001/v1", "POST", 308) is not None


# --- the key in messages -----------------------------------------------------------------------------------


def echo_replies() -> dict[str, tuple[int, dict, str]]:
    """Replies that echo the key, as a careless or hostile server might."""
    as_json = {"Content-Type": "application/json"}
    quoted = urllib.parse.quote(KEY, safe="")
    return {
        "200 without choices": (200, as_json, json.dumps({"error": f"no such model for key {KEY}"})),
        "200 not JSON": (200, {}, f"<html>log in: Bearer {KEY} <a href='/login?key={quoted}'>again</a></html>"),
        "500": (500, {}, f"upstream failed for Authorization: Bearer {KEY} (token={quoted})"),
        "400 JSON-escaped": (400, as_json, json.dumps({"error": {"message": f"invalid api key {KEY}"}})),
    }


@pytest.mark.parametrize("case", list(echo_replies()))
def test_a_reply_echoing_the_key_shows_it_in_no_message(servers, tmp_path, sleeps, caplog, case):
    a, _ = servers
    reply = echo_replies()[case]
    a.script = [reply, reply]  # a 500 is retried once
    caplog.set_level(logging.DEBUG)
    with pytest.raises(ChatAPIError) as info:
        client(a.url, tmp_path, sleeps, max_retries=1).chat(hi())
    error = info.value
    texts = [str(error), repr(error), repr(error.args), error.detail, error.url]
    assert not any(leaked(text) for text in texts), texts
    assert "\n" not in str(error) and "***" in str(error)  # the echo is there, redacted
    records = [r.getMessage() for r in caplog.records]
    assert not leaked(caplog.text) and not any(leaked(r) for r in records), records
    if reply[0] == 500:
        assert len(a.requests) == 2 and len(records) == 1 and "***" in records[0]  # the retry was logged
    assert cached(tmp_path) == []
