"""Several endpoints, connection reuse, TLS, health and close, over real sockets."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Callable

import pytest
import trustme

from koalabot.backend import Backend, GenerationParams
from koalabot.config import load_settings
from koalabot.errors import BackendUnavailableError
from tests.fakes.tgi import FakeTGI
from tests.fixtures.tgi import backend_for

PROMPT = "BEGINNING OF CONVERSATION: USER: Hi GPT:"
PARAMS = GenerationParams(max_new_tokens=64, stop=("</s>", "USER:"))


async def eventually(condition: Callable[[], bool]) -> None:
    """Wait up to 5 s for ``condition()`` to hold (state another task changes)."""
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition never held")


@pytest.fixture
async def two_fakes() -> AsyncIterator[tuple[FakeTGI, FakeTGI]]:
    async with FakeTGI(model_id="a") as a, FakeTGI(model_id="b") as b:
        yield a, b


# --- connection reuse --------------------------------------------------------------------------


async def test_many_streams_few_connections(fake_tgi: FakeTGI, backend: Backend) -> None:
    for _ in range(20):
        await backend.generate(PROMPT, PARAMS)
    assert backend.connections_opened == 1
    await asyncio.gather(*(backend.generate(PROMPT, PARAMS) for _ in range(8)))
    assert 1 <= backend.connections_opened <= 8
    assert fake_tgi.connections == backend.connections_opened  # the server saw the same


async def test_https_streams_reuse_one_connection() -> None:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    async with FakeTGI(ssl_context=server_context, reply=" secure") as fake:
        assert fake.url.startswith("https://")
        async with Backend([fake.url], ssl=client_context) as backend:
            for _ in range(5):
                assert (await backend.generate(PROMPT, PARAMS)).text == " secure"
            assert backend.connections_opened == fake.connections == 1


async def test_an_untrusted_certificate_is_unavailable_without_retries() -> None:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    async with (
        FakeTGI(ssl_context=server_context) as fake,
        backend_for(fake.url, retries=3) as backend,
    ):
        with pytest.raises(BackendUnavailableError):
            await backend.generate(PROMPT, PARAMS)
        assert backend.connections_opened == 0


# --- several endpoints -------------------------------------------------------------------------


async def test_the_endpoint_with_fewest_in_flight_gets_the_request(
    two_fakes: tuple[FakeTGI, FakeTGI],
) -> None:
    a, b = two_fakes
    for fake in two_fakes:
        fake.reply = " " + " ".join(["word"] * 30)
        fake.token_delay = 0.01
    async with backend_for(a.url, b.url) as backend:
        first = backend.stream(PROMPT, PARAMS)
        await anext(aiter(first))
        second = backend.stream(PROMPT, PARAMS)
        await anext(aiter(second))
        assert {first.endpoint, second.endpoint} == {a.url, b.url}
        assert [s.in_flight for s in backend.status()] == [1, 1]

        async for _ in second:
            pass
        third = backend.stream(PROMPT, PARAMS)
        await anext(aiter(third))
        # Round robin would go back to the first endpoint; it is still busy.
        assert third.endpoint == second.endpoint
        await first.aclose()
        await third.aclose()


async def test_a_dead_endpoint_is_skipped_until_health_passes(
    two_fakes: tuple[FakeTGI, FakeTGI],
) -> None:
    a, b = two_fakes
    await a.stop()
    async with backend_for(a.url, b.url, health_check_interval=0.05) as backend:
        completion = await backend.generate(PROMPT, PARAMS)
        assert completion.endpoint == b.url
        assert completion.model_id == "b"
        assert [s.healthy for s in backend.status()] == [False, True]
        for _ in range(4):
            assert (await backend.generate(PROMPT, PARAMS)).endpoint == b.url

        a.healthy = False  # back, but not ready yet
        await a.start()
        await eventually(lambda: any(r.path == "/health" for r in a.requests))
        await asyncio.sleep(0.1)
        assert not backend.status()[0].healthy
        assert a.prompts == []

        a.healthy = True
        await eventually(lambda: backend.status()[0].healthy)
        endpoints = {(await backend.generate(PROMPT, PARAMS)).endpoint for _ in range(4)}
        assert endpoints == {a.url, b.url}


async def test_health_reports_each_endpoint(two_fakes: tuple[FakeTGI, FakeTGI]) -> None:
    a, b = two_fakes
    b.healthy = False
    async with backend_for(a.url, b.url) as backend:
        assert await backend.health() == {a.url: True, b.url: False}
        assert [s.healthy for s in backend.status()] == [True, False]
        for _ in range(3):
            assert (await backend.generate(PROMPT, PARAMS)).endpoint == a.url


async def test_all_endpoints_down_is_unavailable(two_fakes: tuple[FakeTGI, FakeTGI]) -> None:
    for fake in two_fakes:
        await fake.stop()
    async with backend_for(*(f.url for f in two_fakes), retries=3) as backend:
        with pytest.raises(BackendUnavailableError):
            await backend.generate(PROMPT, PARAMS)


# --- life cycle --------------------------------------------------------------------------------


async def test_close_closes_the_connections(fake_tgi: FakeTGI) -> None:
    backend = backend_for(fake_tgi.url)
    await asyncio.gather(*(backend.generate(PROMPT, PARAMS) for _ in range(3)))
    assert fake_tgi.open_connections >= 1
    await backend.close()
    await eventually(lambda: fake_tgi.open_connections == 0)
    assert backend.closed
    with pytest.raises(RuntimeError, match="closed"):
        await backend.generate(PROMPT, PARAMS)


async def test_from_settings_uses_every_url(two_fakes: tuple[FakeTGI, FakeTGI]) -> None:
    a, b = two_fakes
    settings = load_settings(tgi_urls=f"{a.url}/,{b.url}", first_token_timeout=3, idle_timeout=2)
    async with Backend.from_settings(settings) as backend:
        assert [s.url for s in backend.status()] == [a.url, b.url]
        assert (await backend.generate(PROMPT, PARAMS)).text == " You said: Hi"
