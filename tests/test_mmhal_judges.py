"""MMHal-Bench judges: the openai judge against a loopback chat server (real HTTP), the hf judge with a tiny
local causal LM built here, the prompt files (ours and the original), the reply cache, parse failures, and
the wiring into score_samples / runner.run / the CLI."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from chat_server import ChatServer, clear_proxies, user_text

from povid_eval import cards, cli
from povid_eval.benches import registry
from povid_eval.benches.mmhal import files as mmhal_files
from povid_eval.benches.mmhal import judges
from povid_eval.benches.mmhal import scorer as mmhal
from povid_eval.core.errors import InputError, PovidError
from povid_eval.run import runner
from povid_eval.world import judge as world_judge

ROOT = Path(__file__).resolve().parents[1]
KEY_ENV, KEY = "POVID_TEST_JUDGE_KEY", "sk-judge-test-0b9e51-secret"
MODEL = "gpt-4-0613"
N = 16  # two questions of each type


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def grade_of(index: int) -> str:
    """What record i's answer asks the fake judge for: a rating, or an unparseable reply (records 3 and 10)."""
    return {3: "none", 10: "two"}.get(index, str(index % 7))


def expected_ratings() -> list[int]:
    return [0 if grade_of(i) in ("none", "two") else int(grade_of(i)) for i in range(N)]


def fake_judge_reply(body: dict) -> str:
    """The judge's reply, read off the model answer in the prompt: 'GRADE=N' -> 'Rating: N'."""
    grade = re.findall(r"GRADE=(\w+)", user_text(body))
    assert len(grade) == 1, "the model answer appears once in the filled prompt"
    time.sleep(0.02)  # let requests overlap
    if grade[0] == "none":
        return "I cannot make up my mind about this one."
    if grade[0] == "two":
        return "At first sight Rating: 2, but on reflection Rating: 5."
    return f"The answer is judged against the image contents.\nRating: {grade[0]}"


@pytest.fixture
def records(fixtures):
    rows = json.loads((fixtures / "mmhal" / "response_template.json").read_text())[:N]
    return [r | {"model_answer": f"Answer {i} {{with braces}}: GRADE={grade_of(i)}"} for i, r in enumerate(rows)]


@pytest.fixture
def responses(tmp_path, records):
    path = tmp_path / "responses.json"
    path.write_text(json.dumps(records))
    return path


@pytest.fixture
def server(monkeypatch):
    clear_proxies(monkeypatch)
    monkeypatch.setenv(KEY_ENV, KEY)
    with ChatServer(fake_judge_reply) as s:
        yield s
    assert not s.errors, s.errors[0]


def judge_card(server: ChatServer | None = None, **kw) -> cards.BenchCard:
    fields = dict(
        name="mmhal-test",
        kind="mmhal",
        variant="original-parser",
        data="unused",
        judge="openai",
        judge_model=MODEL,
        judge_base_url=server.url if server else "",
        judge_key_env=KEY_ENV,
        files={"template": "template.json"},
    )
    return registry.make_card(None, fields | kw)


def filled(prompt: Path, record: dict) -> str:
    return prompt.read_text().format(
        ", ".join(record["image_content"]), record["question"], record["gt_answer"], record["model_answer"]
    )


def files_text(folder: Path) -> str:
    return "".join(p.read_text() for p in sorted(folder.rglob("*")) if p.is_file())


# ------------------------------------------------------------------------------------------ the openai judge


def test_openai_judge_scores_caches_and_sends_the_filled_prompt(server, responses, records, tmp_path, capsys):
    cache = tmp_path / "cache"
    judge = judges.make_judge(judge_card(server), cache_dir=cache)
    result = mmhal_files.mmhal_from_files(responses, judge=judge, save_replies=tmp_path / "replies.jsonl")

    ratings = expected_ratings()
    m = result["metrics"]
    assert m["score"] == pytest.approx(sum(ratings) / N)
    assert m["hallucination_rate"] == pytest.approx(sum(r < 3 for r in ratings) / N)
    assert m["per_type"] == pytest.approx({t: (ratings[j] + ratings[j + 8]) / 2 for j, t in enumerate(mmhal.TYPES)})
    assert m["parse_failures"] == 2 and m["n"] == N
    assert "warning: 2 of 16 MMHal judge replies have no single 'Rating: N'" in capsys.readouterr().err
    assert result["judge"] == {
        "kind": "openai",
        "model": MODEL,
        "base_url": server.url,
        "prompt_file": str(judges.DEFAULT_PROMPT.resolve()),
        "prompt_sha256": sha256(judges.DEFAULT_PROMPT),
    }

    # one request per record: the pinned model, temperature 0, one user message with the filled prompt (text)
    assert len(server.requests) == N
    by_answer = {r["body"]["messages"][0]["content"]: r for r in server.requests}
    for record in records:
        request = by_answer[filled(judges.DEFAULT_PROMPT, record)]
        assert request["body"]["model"] == MODEL and request["body"]["temperature"] == 0
        assert request["body"]["messages"] == [{"role": "user", "content": filled(judges.DEFAULT_PROMPT, record)}]
        assert request["headers"]["Authorization"] == f"Bearer {KEY}"
    assert 2 <= server.max_in_flight <= judge.workers

    # the replies file is the --judge-replies layout and scores the same
    again = mmhal_files.mmhal_from_files(responses, tmp_path / "replies.jsonl")
    assert again["metrics"] == m

    # re-scoring with a fresh judge (and the rule judge's twin: the same answers) asks nothing
    cached = judges.make_judge(judge_card(server), cache_dir=cache)
    assert mmhal_files.mmhal_from_files(responses, judge=cached)["metrics"] == m
    assert len(server.requests) == N and cached.requests == 0

    # one file per reply, written atomically, without the key
    files = sorted(cache.iterdir())
    assert len(files) == N and not [p for p in files if p.name.startswith(".")]
    cached_reply = json.loads(files[0].read_text())
    assert {"judge", "prompt_sha256", "question", "model_answer", "reply"} <= set(cached_reply)
    assert KEY not in files_text(cache) and KEY not in json.dumps(result) and KEY_ENV not in files_text(cache)

    # a changed prompt file is another judge: new requests
    changed = tmp_path / "changed_prompt.txt"
    changed.write_text(judges.DEFAULT_PROMPT.read_text() + "\nBe strict.\n")
    other = judges.make_judge(judge_card(server), judge_prompt=changed, cache_dir=cache)
    result = mmhal_files.mmhal_from_files(responses, judge=other)
    assert len(server.requests) == 2 * N and other.requests == N
    assert result["judge"]["prompt_sha256"] == sha256(changed) != sha256(judges.DEFAULT_PROMPT)
    assert server.requests[-1]["body"]["messages"][0]["content"].endswith("Be strict.\n")


def test_same_answer_of_another_model_is_not_asked_again(server, records, tmp_path):
    judge = judges.make_judge(judge_card(server), cache_dir=tmp_path / "cache")
    judge.judge_all(records[:4])
    second_model = [r | {"model_answer": r["model_answer"]} for r in records[:6]]
    judge.judge_all(second_model)
    assert len(server.requests) == 6


def test_original_prompt_is_accepted_and_hashed(server, responses, records, tmp_path, fixtures):
    reference = fixtures / "mmhal" / "reference_judge_prompt.txt"
    judge = judges.make_judge(judge_card(server), judge_prompt=reference, cache_dir=tmp_path / "cache")
    result = mmhal_files.mmhal_from_files(responses, judge=judge)
    assert result["judge"]["prompt_sha256"] == sha256(reference)
    assert result["judge"]["prompt_file"] == str(Path(reference).resolve())
    sent = {r["body"]["messages"][0]["content"] for r in server.requests}
    assert sent == {filled(reference, r) for r in records}
    # a card's judge_prompt (relative to the project root unless absolute) does the same
    card = judge_card(server, judge_prompt=str(reference))
    assert judges.make_judge(card, cache_dir=tmp_path / "cache").info()["prompt_sha256"] == sha256(reference)


def test_cli_judges_existing_outputs(server, responses, tmp_path, fixtures):
    reference = fixtures / "mmhal" / "reference_judge_prompt.txt"
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "https_proxy", "all_proxy")}
    env |= {KEY_ENV: KEY, "POVID_EVAL_CACHE": str(tmp_path / "cache")}
    args = [
        sys.executable,
        "-m",
        "povid_eval",
        "score",
        "mmhal",
        "--responses",
        str(responses),
        "--judge",
        "openai",
        "--judge-model",
        MODEL,
        "--judge-base-url",
        server.url,
        "--judge-key-env",
        KEY_ENV,
        "--judge-prompt",
        str(reference),
        "--save-replies",
        str(tmp_path / "replies.jsonl"),
        "--json",
    ]
    proc = subprocess.run(args, capture_output=True, text=True, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["judge"]["prompt_sha256"] == sha256(reference) and out["judge"]["model"] == MODEL
    assert out["metrics"]["parse_failures"] == 2 and out["variant"] == "original-parser"
    assert "2 of 16 MMHal judge replies" in proc.stderr
    assert len(server.requests) == N and len(list((tmp_path / "cache" / "judge").iterdir())) == N
    assert KEY not in files_text(tmp_path / "cache") + proc.stdout + proc.stderr

    # the same again: from the cache; and the replies written score the same through --judge-replies
    again = subprocess.run(args, capture_output=True, text=True, env=env, cwd=tmp_path)
    assert again.returncode == 0 and len(server.requests) == N
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "povid_eval",
            "score",
            "mmhal",
            "--responses",
            str(responses),
            "--judge-replies",
            str(tmp_path / "replies.jsonl"),
            "--json",
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["metrics"] == out["metrics"]


def test_cli_bad_judge_options(responses, tmp_path, cli):
    prompt = tmp_path / "three.txt"
    prompt.write_text("Contents {} question {} answer {}")
    for args, message in [
        (("--judge", "openai"), "the openai judge needs a model"),
        (("--judge", "openai", "--judge-model", MODEL, "--judge-prompt", prompt), "exactly four {} slots"),
        (("--judge", "rule", "--judge-prompt", prompt), "the rule judge uses no prompt"),
        (("--judge-replies", responses, "--judge-model", MODEL), "--judge-model goes with --judge"),
        (("--judge", "hf", "--judge-model", tmp_path / "nothing"), "model folder is not there"),
    ]:
        proc = cli("score", "mmhal", "--responses", responses, *args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert message in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    proc = cli("score", "mmhal", "--responses", responses)
    assert proc.returncode == 2 and "one of the arguments --judge-replies --judge is required" in proc.stderr


def test_endpoint_failure_keeps_the_replies_that_came(server, records, tmp_path):
    server.script += [(400, {}, "bad request")]
    judge = judges.make_judge(judge_card(server), cache_dir=tmp_path / "cache")
    with pytest.raises(PovidError, match="HTTP 400"):
        judge.judge_all(records[:4])
    assert len(list((tmp_path / "cache").iterdir())) == 3  # the other three were cached
    judge.judge_all(records[:4])
    assert len(server.requests) == 5


# ------------------------------------------------------------------------------------------ prompts


@pytest.mark.parametrize(
    "text, problem",
    [
        ("Contents {} question {} answer {}", "found 3"),
        ("{} {} {} {} {}", "found 5"),
        ("{} {} {} {answer}", "not named or formatted fields such as {answer}"),
        ("{} {} {} {:>10}", "such as {:>10}"),
        ("{} {} {} {} and a stray { brace", "write a literal brace as {{ or }}"),
    ],
)
def test_bad_prompt_is_a_one_line_error_naming_the_file(tmp_path, text, problem):
    path = tmp_path / "prompt.txt"
    path.write_text(text)
    with pytest.raises(InputError) as e:
        judges.load_judge_prompt(path)
    assert str(e.value).startswith(str(path)) and problem in str(e.value) and "\n" not in str(e.value)


def test_prompts_ours_and_the_original(fixtures, tmp_path):
    ours = judges.load_judge_prompt()
    assert ours.path == judges.DEFAULT_PROMPT and ours.sha256 == sha256(judges.DEFAULT_PROMPT)
    text = ours.fill({"image_content": ["Cat", "Lynx"], "question": "Q?", "gt_answer": "GT.", "model_answer": "A."})
    assert text.index("Cat, Lynx") < text.index("Q?") < text.index("GT.") < text.index("A.")
    for n in range(7):  # the 0-6 rubric, and the instruction the original parser relies on
        assert re.search(rf"^- {n}: ", ours.text, re.M)
    assert '"Rating: N"' in ours.text
    assert mmhal.parse_rating(ours.text) is None  # the prompt itself holds no "rating: N" with a digit
    reference = judges.load_judge_prompt(fixtures / "mmhal" / "reference_judge_prompt.txt")
    assert reference.text != ours.text
    literal = tmp_path / "braces.txt"
    literal.write_text("Use {{json}}: {} {} {} {}")
    assert (
        judges.load_judge_prompt(literal).fill(
            {"image_content": "x", "question": "q", "gt_answer": "g", "model_answer": "a"}
        )
        == "Use {json}: x q g a"
    )
    with pytest.raises(InputError, match="judge prompt file not found"):
        judges.load_judge_prompt(tmp_path / "missing.txt")


def test_make_judge_from_cards(tmp_path):
    world = registry.load_card("mmhal")
    rule = judges.make_judge(world)
    assert isinstance(rule, world_judge.RuleJudge)
    assert rule.info() == {"kind": "rule", "model": None, "prompt_sha256": None, "prompt_file": None}
    with pytest.raises(InputError, match="bench card 'mmhal': the rule judge uses no prompt"):
        judges.make_judge(world, judge_prompt=judges.DEFAULT_PROMPT)
    with pytest.raises(InputError, match="the openai judge needs a model"):
        judges.make_judge(judge_card(judge_model=""))
    openai = judges.make_judge(judge_card(), cache_dir=tmp_path)
    assert openai.client.base_url == "https://api.openai.com/v1" and openai.client.temperature == 0
    assert judges.make_judge(judge_card(judge_key_env=""), cache_dir=tmp_path).client.api_key_env == "OPENAI_API_KEY"


# ------------------------------------------------------------------------------------------ the hf judge

# A bigram language model: the greedy next token depends only on the current one (attention and MLP
# outputs are zero, embeddings one-hot), so the reply to a prompt is fixed by the prompt's last word.
NEXT = {
    "good": "Rating:",
    "Rating:": "5",
    "poor": "rating:",
    "rating:": "2",
    "unsure": "maybe",
    "twice": "RATING:",
    "RATING:": "1",
    "1": "rATING:",
    "rATING:": "4",
    "verdict": "RaTiNg:",
    "RaTiNg:": "6",
}
HF_ANSWERS = {"The dog is good": 5, "It is poor": 2, "I am unsure": None, "Say it twice": None, "Nothing": None}


def save_bigram_lm(folder: Path, chat_template: str | None = None) -> Path:
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    words = ["<pad>", "<s>", "</s>", "<unk>"] + sorted(set(NEXT) | set(NEXT.values()) | {"2", "4", "5", "6"})
    vocab = {w: i for i, w in enumerate(words)}
    size = 32
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        model_max_length=8192,
    )
    if chat_template:
        tokenizer.chat_template = chat_template
    config = LlamaConfig(
        vocab_size=size,
        hidden_size=size,
        intermediate_size=8,
        num_hidden_layers=1,
        num_attention_heads=1,
        num_key_value_heads=1,
        max_position_embeddings=4096,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        model.model.embed_tokens.weight.copy_(torch.eye(size))
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        model.lm_head.weight.zero_()
        for a in range(size):
            nxt = NEXT.get(words[a]) if a < len(words) else None
            model.lm_head.weight[vocab[nxt] if nxt else vocab["</s>"], a] = 10.0
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def bigram_lm(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf_judge")
    return save_bigram_lm(root / "plain"), save_bigram_lm(root / "chat", "{{ messages[0]['content'] }} verdict")


def hf_records(fixtures) -> list[dict]:
    rows = json.loads((fixtures / "mmhal" / "response_template.json").read_text())
    return [rows[i] | {"model_answer": answer} for i, answer in enumerate(HF_ANSWERS)]


def test_hf_judge_end_to_end_cached(bigram_lm, fixtures, tmp_path):
    plain, _ = bigram_lm
    reference = fixtures / "mmhal" / "reference_judge_prompt.txt"  # ends with the model answer's slot
    card = judge_card(judge="hf", judge_model=str(plain), judge_base_url="", judge_key_env="")
    records = hf_records(fixtures)
    judge = judges.make_judge(card, judge_prompt=reference, cache_dir=tmp_path / "cache")
    replies = judge.judge_all(records)
    assert replies == ["Rating: 5", "rating: 2", "maybe", "RATING: 1 rATING: 4", ""]
    assert [mmhal.parse_rating(r) for r in replies] == list(HF_ANSWERS.values())
    result = mmhal_files.mmhal_result(records, replies, "original-parser", judge=judge.info())
    assert result["metrics"]["parse_failures"] == 3 and result["metrics"]["score"] == pytest.approx(7 / 5)
    assert result["judge"] == {
        "kind": "hf",
        "model": str(plain),
        "prompt_sha256": sha256(reference),
        "prompt_file": str(Path(reference).resolve()),
    }
    assert len(list((tmp_path / "cache").iterdir())) == len(records)

    again = judges.make_judge(card, judge_prompt=reference, cache_dir=tmp_path / "cache")
    assert again.judge_all(records) == replies
    assert again.requests == 0 and again._loaded is None  # cached replies never load the model


def test_hf_judge_uses_the_chat_template(bigram_lm, fixtures, tmp_path):
    _, chat = bigram_lm
    card = judge_card(judge="hf", judge_model=str(chat))
    judge = judges.make_judge(card, cache_dir=tmp_path / "cache")
    assert judge.judge_all(hf_records(fixtures)[:2]) == ["RaTiNg: 6", "RaTiNg: 6"]  # "... verdict" -> 6


# ------------------------------------------------------------------------------------------ wiring


@pytest.fixture
def mmhal_setup(tmp_path, monkeypatch, fixtures, server):
    """A bench card (openai judge on the loopback server) over a data folder with the template and images,
    and a model card; cards and caches in tmp_path."""
    from PIL import Image

    rows = json.loads((fixtures / "mmhal" / "response_template.json").read_text())[:N]
    rows = [r | {"question": f"{r['question']} (#{i})"} for i, r in enumerate(rows)]  # two ask "Describe ..."
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "template.json").write_text(json.dumps(rows))
    for r in rows:
        Image.new("RGB", (8, 8)).save(data / "images" / r["image_src"].rsplit("/", 1)[-1])
    for sub in ("models", "benchmarks"):
        (tmp_path / sub).mkdir()
    (tmp_path / "models" / "fake.toml").write_text('path = "nowhere"\n')
    (tmp_path / "benchmarks" / "mmhal-api.toml").write_text(
        f'bench = "mmhal"\nvariant = "original-parser"\ndata = "{data}"\njudge = "openai"\n'
        f'judge_model = "{MODEL}"\njudge_base_url = "{server.url}"\njudge_key_env = "{KEY_ENV}"\n'
        '[files]\ntemplate = "template.json"\nimages = "images"\n'
    )
    monkeypatch.setenv("POVID_EVAL_MODELS", str(tmp_path / "models"))
    monkeypatch.setenv("POVID_EVAL_BENCHMARKS", str(tmp_path / "benchmarks"))
    monkeypatch.setenv("POVID_EVAL_CACHE", str(tmp_path / "cache"))
    return rows


def fake_generate(images, prompts, decoding):
    order = {r: i for i, r in enumerate(fake_generate.questions)}
    return [f"Answer GRADE={grade_of(order[p])}" for p in prompts]


def test_runner_records_the_judge_and_takes_judge_prompt(mmhal_setup, server, tmp_path, fixtures):
    reference = fixtures / "mmhal" / "reference_judge_prompt.txt"
    fake_generate.questions = [r["question"] for r in mmhal_setup]
    record = runner.run(
        "fake",
        "mmhal-api",
        results=tmp_path / "results",
        generate=fake_generate,
        progress=False,
        judge_prompt=reference,
    )
    metrics = json.loads((tmp_path / "results" / "runs" / "fake" / "mmhal-api" / "metrics.json").read_text())
    assert metrics["judge"] == {
        "kind": "openai",
        "model": MODEL,
        "base_url": server.url,
        "prompt_sha256": sha256(reference),
        "prompt_file": str(Path(reference).resolve()),
    }
    assert metrics["metrics"]["parse_failures"] == 2 == record["metrics"]["parse_failures"]
    assert metrics["metrics"]["score"] == pytest.approx(sum(expected_ratings()) / N)
    assert len(server.requests) == N
    replies = (tmp_path / "results" / "runs" / "fake" / "mmhal-api" / "judge_replies.jsonl").read_text().splitlines()
    assert len(replies) == N
    assert KEY not in files_text(tmp_path / "results") + files_text(tmp_path / "cache")

    # a rerun with the card's (our) prompt: same samples (the protocol did not change), new judge requests
    def fail(*a):
        raise AssertionError("a cached run must not generate")

    record = runner.run("fake", "mmhal-api", results=tmp_path / "results", generate=fail, progress=False)
    assert record["judge"]["prompt_sha256"] == sha256(judges.DEFAULT_PROMPT)
    assert len(server.requests) == 2 * N
    runner.run("fake", "mmhal-api", results=tmp_path / "results", generate=fail, progress=False)
    assert len(server.requests) == 2 * N  # everything judged before comes from the cache

    # score_samples with a plain callable judge still works (kind 'custom')
    card = registry.load_card("mmhal-api")
    samples = [(i + 1, {"question_id": i, "text": "x"}) for i in range(N)]
    out = registry.bench_of(card).score(card, samples, judge=lambda r: "Rating: 4")
    assert out["metrics"]["score"] == 4 and out["judge"]["kind"] == "custom"


def test_run_bad_judge_prompt_fails_before_generating(mmhal_setup, tmp_path):
    prompt = tmp_path / "three.txt"
    prompt.write_text("{} {} {}")

    def fail(*a):
        raise AssertionError("must not generate with a bad judge prompt")

    with pytest.raises(InputError, match="exactly four"):
        runner.run(
            "fake", "mmhal-api", results=tmp_path / "results", generate=fail, progress=False, judge_prompt=prompt
        )


def test_cli_run_passes_judge_prompt(mmhal_setup, monkeypatch, tmp_path):
    seen = {}
    monkeypatch.setattr(runner, "run", lambda model, bench, **kw: seen.update(kw, bench=bench))
    assert cli.main(["run", "--bench", "mmhal-api", "--model", "fake", "--judge-prompt", "p.txt"]) == 0
    assert seen["judge_prompt"] == "p.txt" and seen["bench"] == "mmhal-api"
