"""The fake TGI speaks TGI's wire protocol (reference/tgi-and-koala.md §1), byte for byte where
the reference is exact; the stock text-generation client works against it unchanged."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import text_generation
from text_generation import errors as tgi_errors

from tests.fakes.tgi import FakeTGI, Fault, count_input_tokens, tokenize

ROOT = Path(__file__).resolve().parents[2]
PROMPT = "BEGINNING OF CONVERSATION: USER: Hello! GPT:"


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def post(
    http: aiohttp.ClientSession, url: str, body: Any
) -> tuple[int, str, bytes, dict[str, str]]:
    async with http.post(url, json=body) as response:
        raw = await response.read()
        return response.status, response.content_type, raw, dict(response.headers)


def frames(raw: bytes) -> list[bytes]:
    """The SSE frames of a body, which must be `\\n\\n`-terminated."""
    assert raw.endswith(b"\n\n")
    return raw[:-2].split(b"\n\n")


def events(raw: bytes) -> list[dict[str, Any]]:
    out = []
    for frame in frames(raw):
        if frame == b":":
            continue
        assert frame.startswith(b"data:{"), frame  # no space after the colon
        out.append(json.loads(frame[len(b"data:") :]))
    return out


# --- streaming ---------------------------------------------------------------------------------


async def test_generate_stream_frames_are_tgis(
    fake_tgi: FakeTGI, http: aiohttp.ClientSession
) -> None:
    fake_tgi.replies.append(" Hi!")
    body = {"inputs": PROMPT, "parameters": {"details": True, "max_new_tokens": 20}}
    status, ctype, raw, headers = await post(http, fake_tgi.url + "/generate_stream", body)

    assert (status, ctype) == (200, "text/event-stream")
    assert headers["X-Accel-Buffering"] == "no"
    hi, bang, eos = frames(raw)
    for frame in (hi, bang, eos):
        event = json.loads(frame.removeprefix(b"data:"))  # no space after the colon
        assert list(event) == ["index", "token", "generated_text", "details"]
        assert list(event["token"]) == ["id", "text", "logprob", "special"]
        assert frame == b"data:" + json.dumps(event, separators=(",", ":")).encode()  # compact
    assert json.loads(hi[5:])["token"]["text"] == " Hi"
    assert hi.endswith(b'"special":false},"generated_text":null,"details":null}')
    assert json.loads(bang[5:])["index"] == 2
    last = json.loads(eos[len(b"data:") :])
    assert last["index"] == 3
    assert last["token"] == {
        "id": 2,
        "text": "</s>",
        "logprob": last["token"]["logprob"],
        "special": True,
    }
    assert last["generated_text"] == " Hi!"
    assert last["details"] == {
        "finish_reason": "eos_token",
        "generated_tokens": 3,
        "seed": None,
        "input_length": count_input_tokens(PROMPT),
    }


async def test_stream_details_only_when_asked(
    fake_tgi: FakeTGI, http: aiohttp.ClientSession
) -> None:
    fake_tgi.replies.append(" Hi")
    body = {"inputs": PROMPT, "parameters": {"max_new_tokens": 5}}
    _, _, raw, _ = await post(http, fake_tgi.url + "/generate_stream", body)
    assert events(raw)[-1]["details"] is None


async def test_keepalive_comments_fill_silences(http: aiohttp.ClientSession) -> None:
    async with FakeTGI(reply=" a b", token_delay=0.05, keepalive=0.02) as fake:
        _, _, raw, _ = await post(http, fake.url + "/generate_stream", {"inputs": "x"})
    assert b":\n\n" in raw
    assert [e["token"]["text"] for e in events(raw)] == [" a", " b", "</s>"]


async def test_compat_route_streams_or_wraps_in_an_array(
    fake_tgi: FakeTGI, http: aiohttp.ClientSession
) -> None:
    fake_tgi.reply = " ok"
    params = {"details": True, "return_full_text": False, "max_new_tokens": 5}
    status, ctype, raw, _ = await post(http, fake_tgi.url, {"inputs": PROMPT, "parameters": params})
    assert (status, ctype) == (200, "application/json")
    [answer] = json.loads(raw)
    assert answer["generated_text"] == " ok"
    assert answer["details"]["finish_reason"] == "eos_token"
    assert answer["details"]["prefill"] == []
    assert [t["text"] for t in answer["details"]["tokens"]] == [" ok", "</s>"]

    body = {"inputs": PROMPT, "parameters": params, "stream": True}
    status, ctype, raw, _ = await post(http, fake_tgi.url, body)
    assert (status, ctype) == (200, "text/event-stream")
    assert events(raw)[-1]["generated_text"] == " ok"


async def test_compat_route_returns_full_text_by_default(
    fake_tgi: FakeTGI, http: aiohttp.ClientSession
) -> None:
    fake_tgi.reply = " ok"
    _, _, raw, _ = await post(http, fake_tgi.url, {"inputs": PROMPT, "parameters": {}})
    assert json.loads(raw)[0]["generated_text"] == PROMPT + " ok"
    _, _, raw, _ = await post(
        http, fake_tgi.url + "/generate", {"inputs": PROMPT, "parameters": {}}
    )
    assert json.loads(raw) == {"generated_text": " ok"}


async def test_stop_sequences_stay_in_the_text(
    fake_tgi: FakeTGI, http: aiohttp.ClientSession
) -> None:
    fake_tgi.reply = " Paris is nice. USER: and"
    body = {"inputs": PROMPT, "parameters": {"stop": ["USER:"], "details": True}}
    _, _, raw, _ = await post(http, fake_tgi.url + "/generate", body)
    answer = json.loads(raw)
    assert answer["generated_text"] == " Paris is nice. USER:"
    assert answer["details"]["finish_reason"] == "stop_sequence"


async def test_max_new_tokens_cuts_with_length(
    fake_tgi: FakeTGI, http: aiohttp.ClientSession
) -> None:
    fake_tgi.reply = " one two three four"
    body = {"inputs": PROMPT, "parameters": {"max_new_tokens": 2, "details": True}}
    _, _, raw, _ = await post(http, fake_tgi.url + "/generate_stream", body)
    last = events(raw)[-1]
    assert last["generated_text"] == " one two"
    assert last["details"]["finish_reason"] == "length"


async def test_default_reply_quotes_the_user(
    fake_tgi: FakeTGI, http: aiohttp.ClientSession
) -> None:
    body = {"inputs": "BEGINNING OF CONVERSATION: USER: What is a koala? GPT:"}
    _, _, raw, _ = await post(http, fake_tgi.url + "/generate", body)
    assert json.loads(raw)["generated_text"] == " You said: What is a koala?"
    assert fake_tgi.prompts == [body["inputs"]]


async def test_reply_can_be_a_function_of_the_prompt(
    fake_tgi: FakeTGI, http: aiohttp.ClientSession
) -> None:
    fake_tgi.reply = lambda prompt: f" {len(prompt)}"
    _, _, raw, _ = await post(http, fake_tgi.url + "/generate", {"inputs": "abc"})
    assert json.loads(raw)["generated_text"] == " 3"


# --- info, health, tokenize --------------------------------------------------------------------


async def test_info_in_both_shapes(http: aiohttp.ClientSession) -> None:
    async with FakeTGI(max_input_tokens=1024) as new, FakeTGI(info_style="v1") as old:
        async with http.get(new.url + "/info") as response:
            info = await response.json()
        assert info["max_input_tokens"] == 1024
        assert "max_input_length" not in info
        assert info["max_total_tokens"] == 2048
        async with http.get(old.url + "/info") as response:
            info = await response.json()
        assert info["max_input_length"] == 2047
        assert "max_input_tokens" not in info


async def test_health_is_an_empty_200_or_a_503(
    fake_tgi: FakeTGI, http: aiohttp.ClientSession
) -> None:
    async with http.get(fake_tgi.url + "/health") as response:
        assert (response.status, await response.read()) == (200, b"")
    fake_tgi.healthy = False
    async with http.get(fake_tgi.url + "/health") as response:
        assert response.status == 503
        assert await response.json() == {"error": "unhealthy", "error_type": "healthcheck"}


async def test_tokenize_adds_bos_and_slices_the_input(
    fake_tgi: FakeTGI, http: aiohttp.ClientSession
) -> None:
    text = "Hello world</s>USER: 42"
    _, _, raw, _ = await post(http, fake_tgi.url + "/tokenize", {"inputs": text})
    tokens = json.loads(raw)
    assert tokens[0] == {"id": 1, "text": "", "start": 0, "stop": 0}
    assert all(t["text"] == text[t["start"] : t["stop"]] for t in tokens[1:])
    assert {"id": 2, "text": "</s>", "start": 11, "stop": 15} in tokens
    assert len(tokens) == count_input_tokens(text) == 1 + len(tokenize(text))


async def test_tokenize_404_without_a_fast_tokenizer(http: aiohttp.ClientSession) -> None:
    async with FakeTGI(tokenizer=False) as fake:
        status, _, raw, _ = await post(http, fake.url + "/tokenize", {"inputs": "hi"})
    assert (status, json.loads(raw)) == (404, {"error": "No fast tokenizer available"})


# --- validation --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"top_p": 1.0}, "`top_p` must be > 0.0 and < 1.0"),
        ({"temperature": 0}, "`temperature` must be strictly positive"),
        ({"top_k": 0}, "`top_k` must be strictly positive"),
        ({"max_new_tokens": 0}, "`max_new_tokens` must be strictly positive"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "`stop` supports up to 4 stop sequences. Given: 5"),
        ({"frequency_penalty": 3.0}, "`frequency_penalty` must be >= -2.0 and <= 2.0"),
        ({"best_of": 2}, "you must use sampling when `best_of` is > 1"),
        (
            {"truncate": 5000},
            "`truncate` must be strictly positive and less than 2047. Given: 5000",
        ),
    ],
)
async def test_parameter_validation(
    fake_tgi: FakeTGI, http: aiohttp.ClientSession, parameters: dict[str, Any], message: str
) -> None:
    status, _, raw, _ = await post(
        http, fake_tgi.url + "/generate", {"inputs": PROMPT, "parameters": parameters}
    )
    assert status == 422
    assert json.loads(raw) == {
        "error": f"Input validation error: {message}",
        "error_type": "validation",
    }


async def test_too_long_checks_the_total_first_then_the_input(http: aiohttp.ClientSession) -> None:
    async with FakeTGI(max_input_tokens=10, max_total_tokens=20) as fake:
        prompt = " ".join(["word"] * 12)  # 13 tokens with the BOS
        url = fake.url + "/generate"
        body = {"inputs": prompt, "parameters": {"max_new_tokens": 10}}
        _, _, raw, _ = await post(http, url, body)
        assert json.loads(raw)["error"] == (
            "Input validation error: `inputs` tokens + `max_new_tokens` must be <= 20. "
            "Given: 13 `inputs` tokens and 10 `max_new_tokens`"
        )
        body = {"inputs": prompt, "parameters": {"max_new_tokens": 2}}
        status, _, raw, _ = await post(http, url, body)
        assert status == 422
        assert json.loads(raw)["error"] == (
            "Input validation error: `inputs` must have less than 10 tokens. Given: 13"
        )


async def test_stream_errors_are_events_on_a_200(
    fake_tgi: FakeTGI, http: aiohttp.ClientSession
) -> None:
    body = {"inputs": PROMPT, "parameters": {"top_p": 1.0}}
    status, ctype, raw, _ = await post(http, fake_tgi.url + "/generate_stream", body)
    assert (status, ctype) == (200, "text/event-stream")
    assert raw == (
        b'data:{"error":"Input validation error: `top_p` must be > 0.0 and < 1.0",'
        b'"error_type":"validation"}\n\n'
    )


async def test_bodies_axum_rejects_get_plain_text(
    fake_tgi: FakeTGI, http: aiohttp.ClientSession
) -> None:
    status, ctype, raw, _ = await post(http, fake_tgi.url + "/generate", {"parameters": {}})
    assert (status, ctype) == (422, "text/plain")
    assert b"missing field `inputs`" in raw
    async with http.post(
        fake_tgi.url + "/generate", data=b"{nope", headers={"Content-Type": "application/json"}
    ) as response:
        assert (response.status, response.content_type) == (400, "text/plain")
    async with http.post(fake_tgi.url + "/generate", data=b"{}") as response:
        assert response.status == 415


async def test_requests_are_recorded(fake_tgi: FakeTGI, http: aiohttp.ClientSession) -> None:
    body = {"inputs": PROMPT, "parameters": {"max_new_tokens": 3, "stop": ["</s>"]}}
    await post(http, fake_tgi.url + "/generate_stream", body)
    [request] = fake_tgi.requests
    assert (request.method, request.path, request.inputs) == ("POST", "/generate_stream", PROMPT)
    assert request.parameters == body["parameters"]
    assert fake_tgi.prompts == [PROMPT]


# --- faults ------------------------------------------------------------------------------------


async def test_overloaded_is_429_or_an_event(
    fake_tgi: FakeTGI, http: aiohttp.ClientSession
) -> None:
    fake_tgi.fault = Fault("overloaded", times=2)
    overloaded = {"error": "Model is overloaded", "error_type": "overloaded"}
    status, _, raw, _ = await post(http, fake_tgi.url + "/generate", {"inputs": "x"})
    assert (status, json.loads(raw)) == (429, overloaded)
    status, _, raw, _ = await post(http, fake_tgi.url + "/generate_stream", {"inputs": "x"})
    assert (status, events(raw)) == (200, [overloaded])
    status, _, _, _ = await post(http, fake_tgi.url + "/generate", {"inputs": "x"})
    assert status == 200  # the fault was for two requests


@pytest.mark.parametrize(
    ("kind", "status", "ctype"),
    [
        ("rate_limited", 429, "application/json"),
        ("loading", 503, "application/json"),
        ("html502", 502, "text/html"),
    ],
)
async def test_gateway_faults(
    fake_tgi: FakeTGI, http: aiohttp.ClientSession, kind: Any, status: int, ctype: str
) -> None:
    fake_tgi.fault = Fault(kind, times=None)
    for path in ("/generate", "/generate_stream", "/"):
        got = await post(http, fake_tgi.url + path, {"inputs": "x"})
        assert got[:2] == (status, ctype)


@pytest.mark.parametrize(
    ("kind", "error_type"),
    [("error", "generation"), ("incomplete", "incomplete_generation_stream")],
)
async def test_error_events_after_some_tokens(
    fake_tgi: FakeTGI, http: aiohttp.ClientSession, kind: Any, error_type: str
) -> None:
    fake_tgi.reply = " a b c d"
    fake_tgi.fault = Fault(kind, after_tokens=2)
    _, _, raw, _ = await post(http, fake_tgi.url + "/generate_stream", {"inputs": "x"})
    *tokens, error = events(raw)
    assert [t["token"]["text"] for t in tokens] == [" a", " b"]
    assert error["error_type"] == error_type


async def test_disconnect_cuts_the_stream(fake_tgi: FakeTGI, http: aiohttp.ClientSession) -> None:
    fake_tgi.reply = " a b c d"
    fake_tgi.fault = Fault("disconnect", after_tokens=1)
    with pytest.raises(aiohttp.ClientPayloadError):
        await post(http, fake_tgi.url + "/generate_stream", {"inputs": "x"})


async def test_stall_sends_only_keepalives(http: aiohttp.ClientSession) -> None:
    async with FakeTGI(reply=" a b c", keepalive=0.02) as fake:
        fake.fault = Fault("stall", after_tokens=1)
        async with http.post(fake.url + "/generate_stream", json={"inputs": "x"}) as response:
            first = await response.content.readuntil(b"\n\n")
            assert json.loads(first[5:])["token"]["text"] == " a"
            for _ in range(3):
                assert await response.content.readuntil(b"\n\n") == b":\n\n"


async def test_stopped_fake_refuses_then_serves_again_on_the_same_port(
    fake_tgi: FakeTGI, http: aiohttp.ClientSession
) -> None:
    url = fake_tgi.url
    await fake_tgi.stop()
    with pytest.raises(aiohttp.ClientConnectorError):
        await post(http, url + "/generate", {"inputs": "x"})
    await fake_tgi.start()
    assert fake_tgi.url == url
    assert (await post(http, url + "/generate", {"inputs": "x"}))[0] == 200


async def test_stats_count_connections(fake_tgi: FakeTGI) -> None:
    for _ in range(3):  # a new session each time: a new connection each time
        async with aiohttp.ClientSession() as session:
            await post(session, fake_tgi.url + "/generate", {"inputs": "x"})
    async with aiohttp.ClientSession() as session:
        for _ in range(3):
            await post(session, fake_tgi.url + "/generate", {"inputs": "x"})
        async with session.get(fake_tgi.url + "/_fake/stats") as response:
            stats = await response.json()
    assert stats["connections"] == fake_tgi.connections == 4
    assert stats["requests"] == 6


# --- the stock client --------------------------------------------------------------------------

# text-generation 0.7.0 calls pydantic's deprecated `.dict()`.
stock_client = pytest.mark.filterwarnings("ignore:The `dict` method is deprecated")


@stock_client
async def test_stock_client_generates_against_the_fake(fake_tgi: FakeTGI) -> None:
    client = text_generation.AsyncClient(fake_tgi.url)
    fake_tgi.replies.extend([" Hi! How can I help you?", " Hi again."])
    response = await client.generate(PROMPT, max_new_tokens=20)
    assert response.generated_text == " Hi! How can I help you?"
    assert response.details.finish_reason == "eos_token"
    assert response.details.generated_tokens == 9

    streamed = [r async for r in client.generate_stream(PROMPT, max_new_tokens=20)]
    assert "".join(r.token.text for r in streamed if not r.token.special) == " Hi again."
    assert streamed[-1].generated_text == " Hi again."
    assert streamed[-1].details is not None
    assert streamed[-1].details.generated_tokens == len(streamed)
    sent = fake_tgi.requests[-1]
    assert (sent.path, sent.body["stream"], sent.inputs) == ("/", True, PROMPT)


@stock_client
async def test_stock_client_maps_the_fakes_errors(fake_tgi: FakeTGI) -> None:
    client = text_generation.AsyncClient(fake_tgi.url)
    fake_tgi.fault = Fault("overloaded")
    with pytest.raises(tgi_errors.OverloadedError):
        await client.generate(PROMPT)
    with pytest.raises(tgi_errors.ValidationError, match="must be <= 2048"):
        async for _ in client.generate_stream("word " * 3000, max_new_tokens=1):
            pass
    fake_tgi.reply = " a b c"
    fake_tgi.fault = Fault("error", after_tokens=2)
    seen = []
    with pytest.raises(tgi_errors.GenerationError):
        async for response in client.generate_stream(PROMPT):
            seen.append(response.token.text)
    assert seen == [" a", " b"]


# --- as a program ------------------------------------------------------------------------------


async def test_runs_as_a_program_until_ctrl_c() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.fakes.tgi", "--port", "0", "--token-delay", "0",
        "--reply", " Hello from the fake.",
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 30)).decode()
        url = line.split()[3]
        assert url.startswith("http://127.0.0.1:")
        async with aiohttp.ClientSession() as session:
            _, _, raw, _ = await post(session, url + "/generate", {"inputs": "hi"})
        assert json.loads(raw)["generated_text"] == " Hello from the fake."
        process.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(process.wait(), 30) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
