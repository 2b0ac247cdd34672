"""The backend against the fake TGI over real sockets: streaming, errors, timeouts, retries."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, Literal

import pytest
from aiohttp import web

from koalabot.backend import Backend, GenerationParams, GenerationStream
from koalabot.config import load_settings
from koalabot.errors import (
    BackendOverloadedError,
    BackendPromptTooLongError,
    BackendRejectedError,
    BackendTimeoutError,
    BackendUnavailableError,
    GenerationFailedError,
    TokenizerUnavailableError,
)
from koalabot.prompt.budget import CachedCounter, estimate_tokens
from tests.fakes.tgi import FakeTGI, Fault, FaultKind, count_input_tokens
from tests.fixtures.tgi import backend_for

PROMPT = "BEGINNING OF CONVERSATION: USER: What is a koala? GPT:"
PARAMS = GenerationParams(max_new_tokens=64, stop=("</s>", "USER:"))


async def collect(
    backend: Backend, prompt: str = PROMPT, params: GenerationParams = PARAMS
) -> tuple[GenerationStream, list[str]]:
    stream = backend.stream(prompt, params)
    pieces = [piece async for piece in stream]
    return stream, pieces


# --- streaming ---------------------------------------------------------------------------------


async def test_streams_the_answer_token_by_token(fake_tgi: FakeTGI, backend: Backend) -> None:
    fake_tgi.replies.append(" A koala is a marsupial.</s>")
    stream, pieces = await collect(backend)

    assert pieces == [" A", " koala", " is", " a", " marsupial", "."]
    assert stream.text == " A koala is a marsupial."
    completion = stream.completion
    assert completion is not None
    assert completion.text == " A koala is a marsupial."
    assert completion.finish_reason == "eos_token"
    assert completion.generated_tokens == 7  # six pieces and the EOS
    assert completion.endpoint == stream.endpoint == fake_tgi.url
    assert completion.model_id == "koala-13b-fake"
    assert completion.prompt_tokens == count_input_tokens(PROMPT)
    assert completion.time_to_first_token is not None
    assert 0 < completion.time_to_first_token <= completion.total_time


async def test_sends_the_exact_prompt_and_parameters(fake_tgi: FakeTGI, backend: Backend) -> None:
    params = GenerationParams(
        max_new_tokens=32, temperature=0.7, top_p=0.95, top_k=40, seed=7, stop=("</s>", "USER:")
    )
    await backend.generate(PROMPT, params)

    [request] = fake_tgi.requests[:1]
    assert (request.method, request.path) == ("POST", "/generate_stream")
    assert request.inputs == PROMPT
    assert "stream" not in request.body
    sent = request.parameters
    assert (sent["max_new_tokens"], sent["temperature"], sent["top_p"]) == (32, 0.7, 0.95)
    assert (sent["top_k"], sent["seed"], sent["stop"]) == (40, 7, ["</s>", "USER:"])
    assert sent["do_sample"] is True
    assert sent["details"] is True
    assert sent["return_full_text"] is False


async def test_a_stop_sequence_is_never_shown(fake_tgi: FakeTGI, backend: Backend) -> None:
    fake_tgi.replies.append(" Sure. USER: and now me")
    stream, pieces = await collect(backend)

    assert not any("US" in piece for piece in pieces)
    assert "".join(pieces) == stream.text == " Sure. "
    assert stream.completion is not None
    assert stream.completion.finish_reason == "stop_sequence"
    assert stream.completion.text == " Sure. "


async def test_text_that_only_looks_like_a_stop_start_is_shown(
    fake_tgi: FakeTGI, backend: Backend
) -> None:
    fake_tgi.replies.append(" US dollars")
    stream, pieces = await collect(backend)
    assert "".join(pieces) == " US dollars"
    assert stream.completion is not None
    assert stream.completion.finish_reason == "eos_token"


async def test_length_finish(fake_tgi: FakeTGI, backend: Backend) -> None:
    fake_tgi.replies.append(" one two three four five")
    completion = await backend.generate(PROMPT, GenerationParams(max_new_tokens=3))
    assert (completion.text, completion.finish_reason) == (" one two three", "length")


async def test_keepalive_comments_between_tokens_are_skipped() -> None:
    async with (
        FakeTGI(reply=" slow but sure", token_delay=0.03, keepalive=0.01) as fake,
        backend_for(fake.url, idle_timeout=1.0) as backend,
    ):
        completion = await backend.generate(PROMPT, PARAMS)
    assert completion.text == " slow but sure"


async def test_stopping_early_frees_the_endpoint(fake_tgi: FakeTGI, backend: Backend) -> None:
    fake_tgi.reply = " " + " ".join(["word"] * 50)
    fake_tgi.token_delay = 0.005
    stream = backend.stream(PROMPT, PARAMS)
    async for _ in stream:
        break
    await stream.aclose()
    assert stream.completion is None
    assert [s.in_flight for s in backend.status()] == [0]
    fake_tgi.token_delay = 0.0
    assert (await backend.generate(PROMPT, PARAMS)).text.startswith(" word word")


def tgi_events(*texts: str) -> list[str]:
    """TGI's stream events for these token texts, then the EOS (compact JSON)."""
    events: list[dict[str, Any]] = [
        {"index": i + 1, "token": {"id": 100 + i, "text": t, "logprob": -0.1, "special": False},
         "generated_text": None, "details": None}
        for i, t in enumerate(texts)
    ]  # fmt: skip
    details = {"finish_reason": "eos_token", "generated_tokens": len(texts) + 1, "seed": None}
    eos = {"id": 2, "text": "</s>", "logprob": -0.1, "special": True}
    final = {"index": len(texts) + 1, "token": eos, "generated_text": "".join(texts)}
    events.append(final | {"details": details})
    return [json.dumps(e, separators=(",", ":")) for e in events]


async def serve_bytes(
    body: bytes, piece: int, content_type: str = "text/event-stream"
) -> web.AppRunner:
    """A server answering /generate_stream with ``body``, written ``piece`` bytes at a time."""

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": content_type})
        await response.prepare(request)
        for start in range(0, len(body), piece):
            await response.write(body[start : start + piece])
            await asyncio.sleep(0.001)  # so the client reads the pieces apart
        return response

    app = web.Application()
    app.router.add_post("/generate_stream", handler)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner


@pytest.mark.parametrize("piece", [1, 7, 4096])
async def test_any_valid_event_stream_framing_is_read(piece: int) -> None:
    hello, world, final = tgi_events(" Hello", " world")
    split_at = final.index(',"generated_text"')
    body = (
        b": a comment first\r\n\r\n"
        + f"data: {hello}\r\n\r\n".encode()  # a space after the colon, CRLF line ends
        + f"id: 2\revent: message\rdata:{world}\r\r".encode()  # CR line ends, other fields
        + f"data:{final[:split_at]}\ndata:{final[split_at:]}\n\n".encode()  # two data lines
    )
    runner = await serve_bytes(body, piece)
    port = runner.addresses[0][1]
    try:
        async with backend_for(f"http://127.0.0.1:{port}") as backend:
            stream, pieces = await collect(backend)
    finally:
        await runner.cleanup()
    assert pieces == [" Hello", " world"]
    assert stream.completion is not None
    assert stream.completion.finish_reason == "eos_token"


@pytest.mark.parametrize(
    ("body", "content_type", "error"),
    [
        (b"data:<html>oops</html>\n\n", "text/event-stream", GenerationFailedError),
        (b'data:{"unexpected":true}\n\n', "text/event-stream", GenerationFailedError),
        (b'data:{"error":"boom"}\n\n', "text/event-stream", GenerationFailedError),
        (b"", "text/event-stream", GenerationFailedError),
        (b"<html>Please log in</html>", "text/html", BackendUnavailableError),
    ],
)
async def test_garbage_is_a_backend_error(
    body: bytes, content_type: str, error: type[Exception]
) -> None:
    runner = await serve_bytes(body, 4096, content_type)
    port = runner.addresses[0][1]
    try:
        async with backend_for(f"http://127.0.0.1:{port}", retries=0) as backend:
            with pytest.raises(error):
                await collect(backend)
    finally:
        await runner.cleanup()


# --- info and tokens ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("style", "field"), [("v2", "max_input_tokens"), ("v1", "max_input_length")]
)
async def test_info_in_either_shape(style: Literal["v1", "v2"], field: str) -> None:
    async with (
        FakeTGI(info_style=style, max_input_tokens=1000) as fake,
        backend_for(fake.url) as backend,
    ):
        info = await backend.info()
        assert info[field] == 1000
        assert await backend.model_id() == "koala-13b-fake"
        await backend.info()
    assert [r.path for r in fake.requests] == ["/info"]  # cached


async def test_count_uses_tokenize(fake_tgi: FakeTGI, backend: Backend) -> None:
    text = "USER: Hello, world!</s>"
    assert await backend.count(text) == count_input_tokens(text)
    assert fake_tgi.requests[-1].path == "/tokenize"


async def test_count_without_a_tokenizer_signals_the_budget_to_estimate() -> None:
    async with FakeTGI(tokenizer=False) as fake, backend_for(fake.url) as backend:
        with pytest.raises(TokenizerUnavailableError):
            await backend.count("Hello")
        counter = CachedCounter(backend)
        assert await counter.count("Hello there") == estimate_tokens("Hello there")
        assert counter.estimating


# --- timeouts ----------------------------------------------------------------------------------


async def test_no_first_token_in_time(fake_tgi: FakeTGI) -> None:
    fake_tgi.fault = Fault("stall", after_tokens=0)
    async with backend_for(fake_tgi.url, first_token_timeout=0.3) as backend:
        with pytest.raises(BackendTimeoutError) as raised:
            await collect(backend)
    assert raised.value.partial == ""
    assert len(fake_tgi.prompts) == 1  # a timeout is not retried


async def test_stall_after_some_tokens_despite_keepalives() -> None:
    async with FakeTGI(reply=" a b c d e f", keepalive=0.02) as fake:
        fake.fault = Fault("stall", after_tokens=3)
        async with backend_for(fake.url, idle_timeout=0.3, first_token_timeout=5) as backend:
            stream = backend.stream(PROMPT, PARAMS)
            seen = []
            with pytest.raises(BackendTimeoutError) as raised:
                async for piece in stream:
                    seen.append(piece)
    assert "".join(seen) == raised.value.partial == stream.text == " a b c"


async def test_a_slow_stream_is_not_a_timeout() -> None:
    # A total deadline would cut this stream; first-token and idle limits do not.
    async with (
        FakeTGI(reply=" " + " ".join(["w"] * 12), token_delay=0.05) as fake,
        backend_for(fake.url, first_token_timeout=0.3, idle_timeout=0.3) as backend,
    ):
        completion = await backend.generate(PROMPT, PARAMS)
    assert completion.total_time > 0.3
    assert completion.finish_reason == "eos_token"


# --- retries before the first token ------------------------------------------------------------


@pytest.mark.parametrize("kind", ["rate_limited", "loading", "overloaded"])
async def test_retries_429_503_and_overloaded_then_answers(
    fake_tgi: FakeTGI, backend: Backend, kind: FaultKind
) -> None:
    fake_tgi.fault = Fault(kind, times=2)
    fake_tgi.replies.append(" At last.")
    completion = await backend.generate(PROMPT, PARAMS)
    assert completion.text == " At last."
    assert len(fake_tgi.prompts) == 3


async def test_gives_up_when_still_overloaded(fake_tgi: FakeTGI) -> None:
    fake_tgi.fault = Fault("rate_limited", times=None)
    async with backend_for(fake_tgi.url, retries=2) as backend:
        with pytest.raises(BackendOverloadedError):
            await backend.generate(PROMPT, PARAMS)
    assert len(fake_tgi.prompts) == 3


async def test_retries_a_refused_connection_until_the_server_is_back(
    fake_tgi: FakeTGI, caplog: pytest.LogCaptureFixture
) -> None:
    await fake_tgi.stop()

    async def restart_soon() -> None:
        await asyncio.sleep(0.1)
        await fake_tgi.start()

    restart = asyncio.create_task(restart_soon())
    caplog.set_level(logging.WARNING, logger="koalabot.backend")
    async with backend_for(fake_tgi.url, retries=8, retry_base_delay=0.05) as backend:
        completion = await backend.generate(PROMPT, PARAMS)
    await restart
    assert completion.text == " You said: What is a koala?"
    assert any("retry 1 of 8" in r.getMessage() for r in caplog.records)
    assert len(fake_tgi.prompts) == 1


async def test_nothing_listening_is_unavailable(fake_tgi: FakeTGI) -> None:
    await fake_tgi.stop()
    async with backend_for(fake_tgi.url, retries=2) as backend:
        with pytest.raises(BackendUnavailableError):
            await backend.generate(PROMPT, PARAMS)
        assert [s.healthy for s in backend.status()] == [False]


# --- failures after the first token ------------------------------------------------------------


@pytest.mark.parametrize("kind", ["error", "incomplete", "disconnect"])
async def test_breaks_after_tokens_are_not_retried(
    fake_tgi: FakeTGI, backend: Backend, kind: FaultKind
) -> None:
    fake_tgi.reply = " one two three four"
    fake_tgi.fault = Fault(kind, after_tokens=2)
    stream = backend.stream(PROMPT, PARAMS)
    seen = []
    with pytest.raises(GenerationFailedError) as raised:
        async for piece in stream:
            seen.append(piece)
    assert seen == [" one", " two"]
    assert raised.value.partial == " one two"
    assert len(fake_tgi.prompts) == 1
    assert [s.in_flight for s in backend.status()] == [0]


async def test_an_error_event_before_any_token(fake_tgi: FakeTGI, backend: Backend) -> None:
    fake_tgi.fault = Fault("error", after_tokens=0)
    with pytest.raises(GenerationFailedError) as raised:
        await collect(backend)
    assert raised.value.partial == ""


async def test_a_proxys_html_502_is_a_clear_error(fake_tgi: FakeTGI) -> None:
    fake_tgi.fault = Fault("html502", times=None)
    async with backend_for(fake_tgi.url, retries=1) as backend:
        with pytest.raises(BackendUnavailableError) as raised:
            await collect(backend)
    assert "not reachable" in raised.value.user_message
    assert len(fake_tgi.prompts) == 2  # a gateway error may pass: retried once


# --- rejected requests -------------------------------------------------------------------------


async def test_input_too_long_for_the_model() -> None:
    async with (
        FakeTGI(max_input_tokens=20, max_total_tokens=4096) as fake,
        backend_for(fake.url) as backend,
    ):
        with pytest.raises(BackendPromptTooLongError) as raised:
            await collect(backend, "word " * 50)
    assert "too long" in raised.value.user_message
    assert len(fake.prompts) == 1


async def test_input_and_answer_too_long_together() -> None:
    async with (
        FakeTGI(max_input_tokens=100, max_total_tokens=120) as fake,
        backend_for(fake.url) as backend,
    ):
        with pytest.raises(BackendPromptTooLongError):
            await collect(backend, "word " * 50, GenerationParams(max_new_tokens=100))


async def test_other_validation_errors_are_rejections(fake_tgi: FakeTGI, backend: Backend) -> None:
    params = GenerationParams(stop=("a", "b", "c", "d", "e"))
    with pytest.raises(BackendRejectedError, match="supports up to 4 stop sequences"):
        await collect(backend, PROMPT, params)
    assert len(fake_tgi.prompts) == 1


@pytest.mark.parametrize(
    ("prompt", "params"),
    [
        (PROMPT, GenerationParams(top_p=1.0)),
        (PROMPT, GenerationParams(temperature=0)),
        ("", PARAMS),
    ],
)
async def test_invalid_requests_are_refused_before_sending(
    fake_tgi: FakeTGI, backend: Backend, prompt: str, params: GenerationParams
) -> None:
    with pytest.raises(BackendRejectedError):
        backend.stream(prompt, params)
    assert fake_tgi.requests == []


# --- parameters --------------------------------------------------------------------------------


def test_params_from_settings_and_as_stored() -> None:
    settings = load_settings(max_new_tokens=100, temperature=0.5, top_p=0.9, seed=3)
    params = GenerationParams.from_settings(settings, stop=["</s>", "USER:"])
    assert params == GenerationParams(100, 0.5, 0.9, None, None, 3, ("</s>", "USER:"))
    assert params.as_dict() == {
        "max_new_tokens": 100,
        "temperature": 0.5,
        "top_p": 0.9,
        "top_k": None,
        "repetition_penalty": None,
        "seed": 3,
        "stop": ["</s>", "USER:"],
        "do_sample": True,
    }
    greedy = GenerationParams(temperature=None, top_p=None)
    assert greedy.as_dict()["do_sample"] is False
