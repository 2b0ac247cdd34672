"""The OpenAI-compatible completions backend against a fake server on real sockets."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from koalabot.backend import Backend, GenerationParams
from koalabot.config import load_settings
from koalabot.errors import (
    BackendOverloadedError,
    BackendPromptTooLongError,
    BackendRejectedError,
    BackendTimeoutError,
    BackendUnavailableError,
    ConfigError,
    GenerationFailedError,
)
from koalabot.prompt.budget import CachedCounter, Limits
from tests.fakes.openai import FakeOpenAI, Fault, count_tokens
from tests.fakes.tgi import FakeTGI
from tests.fixtures.llama import LoggingProxy

PROMPT = "BEGINNING OF CONVERSATION: USER: What is a koala? GPT:"
PARAMS = GenerationParams(
    max_new_tokens=64, temperature=0.7, top_p=0.95, seed=7, stop=("</s>", "USER:")
)


@pytest.fixture
async def server() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as fake:
        yield fake


def make(urls: list[str], **kwargs: object) -> Backend:
    options: dict[str, object] = {
        "api": "auto",
        "first_token_timeout": 2.0,
        "idle_timeout": 1.0,
        "retry_base_delay": 0.01,
    }
    options.update(kwargs)
    return Backend(urls, **options)  # type: ignore[arg-type]


async def test_auto_finds_openai_and_sends_the_raw_prompt(
    server: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    server.reply = " Koalas sleep a lot.</s>USER: ignored"
    caplog.set_level(logging.INFO, "koalabot.backend")
    async with make([server.url]) as backend:
        stream = backend.stream(PROMPT, PARAMS)
        pieces = [p async for p in stream]
        assert backend.kind == "openai"
    assert "".join(pieces) == " Koalas sleep a lot."
    assert stream.completion is not None
    assert stream.completion.finish_reason == "stop"
    assert stream.completion.prompt_tokens == count_tokens(PROMPT)
    assert stream.completion.model_id == "koala-13b"
    [request] = [r for r in server.requests if r.path == "/v1/completions"]
    assert request.body["prompt"] == PROMPT  # byte for byte, no chat template
    sent = {k: request.body[k] for k in ("model", "stream", "max_tokens", "stop", "seed")}
    assert sent == {
        "model": "koala-13b",
        "stream": True,
        "max_tokens": 64,
        "stop": ["</s>", "USER:"],
        "seed": 7,
    }
    assert (request.body["temperature"], request.body["top_p"]) == (0.7, 0.95)
    assert "OpenAI-compatible" in caplog.text


async def test_auto_still_finds_tgi() -> None:
    async with FakeTGI() as tgi, make([tgi.url]) as backend:
        completion = await backend.generate(PROMPT, PARAMS)
        assert backend.kind == "tgi"
    assert completion.text
    assert [r.path for r in tgi.requests].count("/info") == 1  # the probe's /info is kept


async def test_api_key_goes_as_bearer(server: FakeOpenAI) -> None:
    server.api_key = "s3cret"
    async with make([server.url], api_key="s3cret") as backend:
        await backend.generate(PROMPT, PARAMS)
    async with make([server.url], api_key="wrong", api="openai") as backend:
        with pytest.raises(BackendRejectedError):
            await backend.generate(PROMPT, PARAMS)


async def test_429_waits_for_retry_after_then_answers(server: FakeOpenAI) -> None:
    server.fault = Fault("429", retry_after=0.3)
    async with make([server.url], api="openai") as backend:
        started = asyncio.get_running_loop().time()
        completion = await backend.generate(PROMPT, PARAMS)
        waited = asyncio.get_running_loop().time() - started
    assert completion.text == " Koalas eat eucalyptus leaves."
    assert waited >= 0.3


async def test_429_without_end_is_overloaded(server: FakeOpenAI) -> None:
    server.fault = Fault("429", times=10, retry_after=0.01)
    async with make([server.url], api="openai", retries=2) as backend:
        with pytest.raises(BackendOverloadedError):
            await backend.generate(PROMPT, PARAMS)


async def test_refused_fails_over_to_the_next_server(server: FakeOpenAI) -> None:
    dead = FakeOpenAI()
    await dead.start()
    await dead.stop()  # a port nobody listens on
    async with make([dead.url, server.url], api="openai") as backend:
        completion = await backend.generate(PROMPT, PARAMS)
    assert completion.endpoint == server.url
    async with make([dead.url], api="openai", retries=1) as backend:
        with pytest.raises(BackendUnavailableError):
            await backend.generate(PROMPT, PARAMS)


async def test_html_502_is_retried_elsewhere(server: FakeOpenAI) -> None:
    async with FakeOpenAI() as other:
        other.fault = Fault("html_502", times=5)
        async with make([other.url, server.url], api="openai") as backend:
            completion = await backend.generate(PROMPT, PARAMS)
    assert completion.endpoint == server.url


async def test_a_stall_before_the_first_token_times_out(server: FakeOpenAI) -> None:
    server.fault = Fault("stall", seconds=5)
    async with make([server.url], api="openai", first_token_timeout=0.5) as backend:
        with pytest.raises(BackendTimeoutError):
            await backend.generate(PROMPT, PARAMS)


async def test_a_stall_mid_stream_keeps_the_partial_answer(server: FakeOpenAI) -> None:
    server.fault = Fault("stall_mid", seconds=5)
    async with make([server.url], api="openai", idle_timeout=0.3) as backend:
        with pytest.raises(BackendTimeoutError) as caught:
            await backend.generate(PROMPT, PARAMS)
    assert caught.value.partial == " Koalas"


async def test_an_error_mid_stream_keeps_the_partial_answer(server: FakeOpenAI) -> None:
    server.fault = Fault("error_mid_stream")
    async with make([server.url], api="openai") as backend:
        with pytest.raises(GenerationFailedError) as caught:
            await backend.generate(PROMPT, PARAMS)
    assert caught.value.partial == " Koalas"


@pytest.mark.parametrize(
    "payload",
    [
        None,  # vLLM: "This model's maximum context length is ..."
        {  # llama.cpp server
            "error": {
                "code": 400,
                "message": "request (4476 tokens) exceeds the available context size (4096 tokens)",
                "type": "exceed_context_size_error",
                "n_prompt_tokens": 4476,
                "n_ctx": 4096,
            }
        },
        {  # llama-cpp-python server
            "error": {
                "message": "This model's maximum context length is 2048 tokens, however ...",
                "type": "invalid_request_error",
                "param": "messages",
                "code": "context_length_exceeded",
            }
        },
        {  # vLLM before 0.10: the fields at the top level
            "object": "error",
            "message": "This model's maximum context length is 2048 tokens. However, ...",
            "type": "BadRequestError",
            "param": None,
            "code": 400,
        },
    ],
)
async def test_context_too_long_is_prompt_too_long(
    server: FakeOpenAI, payload: dict[str, object] | None
) -> None:
    server.fault = Fault("too_long", payload=payload)
    async with make([server.url], api="openai") as backend:
        with pytest.raises(BackendPromptTooLongError):
            await backend.generate(PROMPT, PARAMS)


async def test_info_and_counts_come_from_the_server(server: FakeOpenAI) -> None:
    async with make([server.url]) as backend:
        limits = Limits.from_info(await backend.info())
        counter = CachedCounter(backend)
        first = await counter.count(PROMPT)
        again = await counter.count(PROMPT)
    assert limits.max_total_tokens == 2048
    assert first == again == count_tokens(PROMPT)
    assert [r.path for r in server.requests].count("/tokenize") == 1  # cached after that


async def test_no_stated_context_needs_the_setting() -> None:
    async with FakeOpenAI(state_context=False) as server:
        async with make([server.url]) as backend:
            with pytest.raises(ConfigError, match="KOALABOT_CONTEXT_TOKENS"):
                await backend.info()
        async with make([server.url], context_tokens=1024) as backend:
            assert (await backend.info())["max_total_tokens"] == 1024


async def test_a_model_the_server_does_not_serve_is_a_config_error(server: FakeOpenAI) -> None:
    async with make([server.url], model="other") as backend:
        with pytest.raises(ConfigError, match="KOALABOT_MODEL"):
            await backend.info()


async def test_no_tokenizer_means_estimates(server: FakeOpenAI) -> None:
    server.tokenizer = False
    async with make([server.url]) as backend:
        counter = CachedCounter(backend)
        await counter.count(PROMPT)
        assert counter.estimating


def test_model_url_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KOALABOT_TGI_URL", "http://tgi:8080")
    assert load_settings().endpoints == ["http://tgi:8080"]
    monkeypatch.setenv("KOALABOT_MODEL_URL", "http://a:8000/, http://b:8000")
    monkeypatch.setenv("KOALABOT_MODEL_API", "openai")
    monkeypatch.setenv("KOALABOT_MODEL_API_KEY", "k")
    settings = load_settings()
    assert settings.endpoints == ["http://a:8000", "http://b:8000"]
    assert settings.model_api == "openai"
    assert "k" not in repr(settings.model_api_key)
    monkeypatch.setenv("KOALABOT_MODEL_API", "grpc")
    with pytest.raises(ConfigError, match="KOALABOT_MODEL_API"):
        load_settings()


async def test_start_check_refuses_a_missing_context_but_not_a_down_server() -> None:
    async with FakeOpenAI(state_context=False) as server, make([server.url]) as backend:
        with pytest.raises(ConfigError, match="KOALABOT_CONTEXT_TOKENS"):
            await backend.check()
    dead_url = server.url  # stopped now: refused
    async with make([dead_url], retries=5, retry_base_delay=1.0) as backend:
        started = asyncio.get_running_loop().time()
        await backend.check()  # only logged; one attempt, no backoff
        assert asyncio.get_running_loop().time() - started < 1.0


async def test_a_local_tokenizer_counts_without_asking_the_server(
    server: FakeOpenAI, tmp_path: Path
) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers

    tokenizer = Tokenizer(models.WordLevel({"[UNK]": 0, "koala": 1}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    path = tmp_path / "tokenizer.json"
    tokenizer.save(str(path))
    async with make([server.url], tokenizer=str(path)) as backend:
        assert await backend.count("a koala is a koala") == 5
    assert not [r for r in server.requests if r.path == "/tokenize"]
    with pytest.raises(ConfigError, match="KOALABOT_TOKENIZER"):
        make([server.url], tokenizer=str(tmp_path / "missing.json"))


async def test_a_stream_needs_no_context_window() -> None:
    async with FakeOpenAI(state_context=False) as server, make([server.url]) as backend:
        completion = await backend.generate(PROMPT, PARAMS)
    assert completion.model_id == "koala-13b"


async def test_the_api_key_also_goes_to_tgi() -> None:
    async with FakeTGI() as tgi:
        proxy = LoggingProxy(tgi.url)  # FakeTGI keeps no headers: a proxy in front does
        await proxy.start()
        try:
            async with make([proxy.url], api_key="hf_secret") as backend:
                await backend.generate(PROMPT, PARAMS)
                assert backend.kind == "tgi"
        finally:
            await proxy.stop()
    sent = {e.path: e.headers.get("Authorization") for e in proxy.exchanges}
    assert sent["/info"] == sent["/generate_stream"] == "Bearer hf_secret"
