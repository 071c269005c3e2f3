"""The OpenAI-compatible client and the LLM hallucination injector against a real loopback HTTP server."""

from __future__ import annotations

import base64
import io
import json
import socket
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from chat_server import ChatServer, clear_proxies
from chat_server import user_text as last_user_text
from PIL import Image

from povid_eval.core.errors import MissingAssetError, PovidError
from povid_eval.core.http import ChatAPIError, ChatClient, image_content, parse_retry_after
from povid_eval.train.llm_inject import RETRY_NOTE, InjectionError, LLMInjector, parse_rewrite

KEY_ENV, KEY = "POVID_TEST_API_KEY", "sk-test-7f3a9c-secret"


@pytest.fixture
def server(monkeypatch):
    """The loopback server (tests/chat_server.py); ``server.reply(body) -> text`` is settable per test."""
    clear_proxies(monkeypatch)
    chat = ChatServer(lambda body: chat.reply(body))
    chat.reply = lambda body: "echo: " + last_user_text(body)
    with chat:
        yield chat


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def make_client(server, sleeps, tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)

    def make(**kwargs: Any) -> ChatClient:
        options = {"api_key_env": KEY_ENV, "cache_dir": tmp_path / "cache", "sleep": sleeps.append, **kwargs}
        return ChatClient(server.url, "judge-model", **options)

    return make


def hi(text: str = "hi") -> list[dict]:
    return [{"role": "user", "content": text}]


def cache_text(cache_dir: Path) -> str:
    return "".join(p.read_text() for p in sorted(cache_dir.rglob("*")) if p.is_file())


# --- the client -----------------------------------------------------------------------------------------


def test_chat_posts_openai_request_with_bearer_key(server, make_client):
    client = make_client(max_tokens=64)
    assert client.chat(hi("hello"), seed=3) == "echo: hello"
    (request,) = server.requests
    assert request["path"] == "/v1/chat/completions"
    assert request["headers"]["Authorization"] == f"Bearer {KEY}"
    assert request["headers"]["Content-Type"] == "application/json"
    assert request["body"] == {
        "model": "judge-model",
        "messages": hi("hello"),
        "temperature": 0.0,
        "max_tokens": 64,
        "seed": 3,
    }
    assert KEY not in repr(client) and KEY not in str(vars(client))


def test_key_only_from_the_named_env_var(server, make_client, monkeypatch):
    make_client(api_key_env=None, cache_dir=None).chat(hi())
    assert "Authorization" not in server.requests[-1]["headers"]
    monkeypatch.delenv(KEY_ENV)
    with pytest.raises(MissingAssetError, match=KEY_ENV):
        make_client(cache_dir=None).chat(hi())
    assert len(server.requests) == 1


def test_cache_answers_a_rerun_without_requests_and_holds_no_key(server, make_client, tmp_path, monkeypatch):
    first = make_client()
    assert first.chat(hi("a")) == "echo: a"
    assert first.chat(hi("a")) == "echo: a"
    assert len(server.requests) == 1
    first.chat(hi("a"), temperature=0.7)  # another request, another cache entry
    assert len(server.requests) == 2
    files = sorted((tmp_path / "cache").iterdir())
    assert len(files) == 2 and all(len(p.stem) == 64 and p.suffix == ".json" for p in files)
    assert not list((tmp_path / "cache").glob(".*"))  # no temp files left behind
    monkeypatch.delenv(KEY_ENV)  # a rerun is served from the cache, offline, without the key
    assert make_client().chat(hi("a")) == "echo: a"
    assert len(server.requests) == 2
    assert KEY not in cache_text(tmp_path / "cache")
    assert json.loads(files[0].read_text())["content"] == "echo: a"


def test_429_retried_with_exponential_backoff(server, make_client, sleeps):
    server.script = [(429, {}, "slow down"), (429, {}, "slow down"), (429, {}, "slow down")]
    assert make_client(backoff=0.5, max_backoff=1.5).chat(hi()) == "echo: hi"
    assert len(server.requests) == 4
    assert sleeps == [0.5, 1.0, 1.5]  # 0.5 * 2**k, capped at max_backoff


def test_retry_after_honoured_and_capped(server, make_client, sleeps):
    server.script = [(429, {"Retry-After": "3"}, "rate limited"), (503, {"Retry-After": "1000"}, "busy")]
    assert make_client(max_backoff=10).chat(hi()) == "echo: hi"
    assert sleeps == [3.0, 10.0]
    assert parse_retry_after("Thu, 01 Jan 1970 00:00:30 GMT", now=10.0) == 20.0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


def test_500_retried_up_to_max_retries_then_clear_error(server, make_client, sleeps):
    server.script = [(500, {}, "internal\nerror " + "x" * 1000)] * 5
    client = make_client(max_retries=2)
    with pytest.raises(ChatAPIError) as info:
        client.chat(hi())
    assert len(server.requests) == 3 and sleeps == [1.0, 2.0]
    message = str(info.value)
    assert "\n" not in message and len(message) < 400
    assert client.url in message and "HTTP 500" in message and "gave up after 3 attempts" in message
    assert "internal error" in message and info.value.status == 500
    assert not (client.cache_dir.exists() and any(client.cache_dir.iterdir()))  # failures are not cached


def test_400_not_retried_and_error_never_shows_the_key(server, make_client, sleeps):
    server.script = [
        (
            400,
            {"Content-Type": "application/json"},
            json.dumps({"error": {"message": f"bad max_tokens; you sent Authorization: Bearer {KEY}"}}),
        )
    ]
    with pytest.raises(ChatAPIError) as info:
        make_client().chat(hi())
    assert isinstance(info.value, PovidError)
    assert len(server.requests) == 1 and sleeps == []
    message = str(info.value)
    assert "HTTP 400" in message and "bad max_tokens" in message and "\n" not in message
    assert KEY not in message and KEY not in repr(info.value.args)


def test_connection_errors_and_timeouts_are_retried(server, make_client, sleeps):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = ChatClient(f"http://127.0.0.1:{port}/v1", "m", max_retries=2, sleep=sleeps.append)
    with pytest.raises(ChatAPIError, match="gave up after 3 attempts: connection failed") as info:
        client.chat(hi())
    assert info.value.status is None and sleeps == [1.0, 2.0]
    sleeps.clear()
    server.script = [("hang", 0.6)]
    assert make_client(timeout=0.2).chat(hi("late")) == "echo: late"
    assert len(server.requests) == 2 and sleeps == [1.0]


def test_malformed_answer_is_a_clear_error(server, make_client):
    server.reply = lambda body: None  # type: ignore[assignment,return-value]
    with pytest.raises(ChatAPIError, match="content is NoneType"):
        make_client().chat(hi())
    server.script = [(200, {}, "<html>proxy login</html>")]
    with pytest.raises(ChatAPIError, match="not JSON: <html>proxy login"):
        make_client().chat(hi("other"))


def test_chat_many_keeps_input_order(server, make_client):
    def reply(body: dict) -> str:
        index = int(last_user_text(body))
        time.sleep(0.02 * (5 - index))  # the first ones finish last
        return f"answer {index}"

    server.reply = reply
    client = make_client()
    conversations = [hi(str(i)) for i in range(6)]
    assert client.chat_many(conversations, workers=3) == [f"answer {i}" for i in range(6)]
    assert client.chat_many(conversations, workers=3) == [f"answer {i}" for i in range(6)]
    assert len(server.requests) == 6  # the second pass came from the cache


def test_image_content_round_trips(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (12, 17, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    image.save(tmp_path / "a.png")
    for source in (image, tmp_path / "a.png", str(tmp_path / "a.png")):
        content = image_content(source, "Describe this image.")
        assert [part["type"] for part in content] == ["image_url", "text"]
        assert content[1]["text"] == "Describe this image."
        url = content[0]["image_url"]["url"]
        prefix = "data:image/png;base64,"
        assert url.startswith(prefix)
        decoded = Image.open(io.BytesIO(base64.b64decode(url[len(prefix) :], validate=True)))
        assert decoded.format == "PNG" and np.array_equal(np.asarray(decoded), pixels)


def test_image_request_reaches_the_server_and_cache_keeps_only_a_hash(server, make_client, tmp_path):
    image = Image.new("RGB", (8, 8), (200, 10, 10))
    messages = [{"role": "user", "content": image_content(image, "What colour?")}]
    assert make_client().chat(messages) == "echo: What colour?"
    sent = server.requests[0]["body"]["messages"][0]["content"][0]["image_url"]["url"]
    assert sent.startswith("data:image/png;base64,")
    stored = cache_text(tmp_path / "cache")
    assert "base64," not in stored and "data:image/png;sha256," in stored
    assert make_client().chat(messages) == "echo: What colour?" and len(server.requests) == 1


# --- the injector ---------------------------------------------------------------------------------------

CAPTION = "A man throws a ball to a brown dog on the grass."


def rewrite_with_first_candidate(body: dict) -> str:
    prompt = last_user_text(body)
    candidates = prompt.split("NOT in the image: ")[1].splitlines()[0].split(", ")
    assert CAPTION in prompt and "man, dog, sports ball" in prompt
    return f'Rewritten caption: "{CAPTION[:-1]} next to a {candidates[0]}."\n'


def test_injector_adds_a_candidate_and_caches(server, make_client, tmp_path):
    server.reply = rewrite_with_first_candidate
    injector = LLMInjector(make_client())
    out = injector(CAPTION, ["man", "dog", "sports ball"], ["frisbee", "kite"])
    assert out == "A man throws a ball to a brown dog on the grass next to a frisbee."
    assert LLMInjector(make_client())(CAPTION, ["man", "dog", "sports ball"], ["frisbee", "kite"]) == out
    assert len(server.requests) == 1
    assert KEY not in cache_text(tmp_path / "cache")
    assert len(injector.prompt_sha256) == 64


def test_injector_retries_once_then_names_the_caption(server, make_client):
    replies = iter([CAPTION, "  ", "A woman throws a red frisbee to a cat."])
    server.reply = lambda body: next(replies)
    injector = LLMInjector(make_client())
    with pytest.raises(InjectionError, match='empty reply twice for caption "A man throws a ball'):
        injector(CAPTION, ["man", "dog"], ["frisbee"])
    retry = server.requests[1]["body"]["messages"]
    assert [m["role"] for m in retry] == ["user", "assistant", "user"] and retry[2]["content"] == RETRY_NOTE
    assert injector("A dog.", ["dog"], ["cat"]) == "A woman throws a red frisbee to a cat."


@pytest.mark.parametrize(
    "reply, expected",
    [
        ('  "A red bus."  ', "A red bus."),
        ("Rewritten caption: A cat on a mat.", "A cat on a mat."),
        ("**Hallucinated description:** A cat.", "A cat."),
        ("Here is the rewritten description:\n\n\u201cTwo red buses.\u201d", "Two red buses."),
        ("<think>add a kite</think>\n```\nCaption: A kite.\n```", "A kite."),
        ("A sign reads: stop.", "A sign reads: stop."),
    ],
)
def test_parse_rewrite(reply, expected):
    assert parse_rewrite(reply) == expected


def test_custom_prompt_is_checked(make_client):
    client = make_client()
    with pytest.raises(PovidError, match="no \\{caption\\}"):
        LLMInjector(client, "Rewrite this.")
    with pytest.raises(PovidError, match="bad placeholder"):
        LLMInjector(client, "Rewrite {caption} with {objects}.")
    assert (
        LLMInjector(client, "Rewrite {caption}; JSON like {{}} is fine.").messages("x", [], [])[0]["content"]
        == "Rewrite x; JSON like {} is fine."
    )
