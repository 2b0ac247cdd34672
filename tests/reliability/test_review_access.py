"""The review page keeps its token to itself: the browser holds a session value bound to the
page's origin and to the process, requests for another Host are refused (DNS rebinding), a weak
KOALABOT_REVIEW_TOKEN is refused, and `koalabot review` serves on a loopback address of its own.
(The browser half, with a second local server, is tests/browser/test_review_access.py.)"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from koalabot.cli import main
from koalabot.review.access import COOKIE, token_bits
from koalabot.review.app import review_app
from koalabot.store.database import Database, open_database, upgrade
from tests.helpers_review import review_process

TOKEN = "Zq3vT8mK1pX6wR2yL9dF4hB7nC5jG0sA"


@pytest.fixture
async def db(sqlite_url: str) -> AsyncIterator[Database]:
    database = await open_database(sqlite_url)
    try:
        yield database
    finally:
        await database.close()


async def _serve(db: Database) -> TestServer:
    server = TestServer(review_app(db, TOKEN, "ana"), host="127.0.0.1", port=0)
    await server.start_server()
    return server


async def _session_cookie(base: str) -> str:
    jar = aiohttp.CookieJar(unsafe=True)
    async with (
        aiohttp.ClientSession(cookie_jar=jar) as http,
        http.get(f"{base}/?token={TOKEN}", allow_redirects=False) as response,
    ):
        assert response.status == 303
        return response.cookies[COOKIE].value


async def _status(url: str, headers: dict[str, str]) -> int:
    async with (
        aiohttp.ClientSession() as http,
        http.get(url, headers=headers, allow_redirects=False) as response,
    ):
        return response.status


async def test_the_cookie_is_a_session_of_this_process_and_origin(db: Database) -> None:
    server = await _serve(db)
    base = str(server.make_url("")).rstrip("/")
    port = server.port
    try:
        cookie = await _session_cookie(base)
        assert TOKEN not in cookie
        ok = {"Cookie": f"{COOKIE}={cookie}"}
        assert await _status(base + "/", ok) == 200
        # Replayed under another name of the same server (another origin): refused.
        assert await _status(base + "/", {**ok, "Host": f"localhost:{port}"}) == 401
        assert await _status(base + "/", {"Cookie": f"{COOKIE}={TOKEN}"}) == 401
    finally:
        await server.close()
    # The same token in a new process (a restart): yesterday's session is worth nothing.
    again = await _serve(db)
    try:
        base = str(again.make_url("")).rstrip("/")
        assert await _status(base + "/", {"Cookie": f"{COOKIE}={cookie}"}) == 401
    finally:
        await again.close()


@pytest.mark.parametrize("host", ["evil.example:{port}", "evil.example", "127.0.0.2:{port}"])
async def test_a_request_for_another_host_is_refused(db: Database, host: str) -> None:
    server = await _serve(db)
    try:
        url = str(server.make_url("/?token=" + TOKEN))
        status = await _status(url, {"Host": host.format(port=server.port)})
        assert status == 421
        assert await _status(url, {"Host": f"localhost:{server.port}"}) == 303
    finally:
        await server.close()


@pytest.mark.parametrize(
    ("token", "strong"),
    [
        ("from-env-token", False),
        ("Password1!Password1!", False),
        ("Zq3vT8mK1pXZq3vT8mK1pXZq3vT8mK1pX", False),
        ("Password1!", False),
        ("a" * 64, False),
        ("3f9a1c7e5b2d8046e1c9a7f3b5d20864", True),  # 32 hex digits: exactly 128 bits
        ("3f9a1c7e5b2d8046e1c9a7f3b5d2086", False),  # 31: 124 bits
        ("Zq3vT8mK1pX6wR2yL9dF4h", True),  # 22 URL-safe characters: 132 bits
    ],
)
def test_token_strength(token: str, strong: bool) -> None:
    assert (token_bits(token) >= 128) is strong


async def test_koalabot_review_refuses_a_weak_token(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    await upgrade(sqlite_url)  # review reads an existing store; it never creates one
    monkeypatch.setenv("KOALABOT_REVIEW_TOKEN", "hunter2hunter2")
    argv = ["review", "--port", "0", "--database-url", sqlite_url]
    assert await asyncio.to_thread(main, argv) == 2
    err = capsys.readouterr().err
    assert "too weak" in err and "hunter2" not in err
    assert "Traceback" not in err


async def test_koalabot_review_makes_a_token_for_an_empty_one_and_serves_on_its_own_address(
    sqlite_url: str,
) -> None:
    await upgrade(sqlite_url)
    env = {**os.environ, "KOALABOT_REVIEW_TOKEN": ""}
    async with review_process(sqlite_url, env) as line:
        link = re.search(r"http://(127(?:\.\d+){3}):\d+/\?token=(\S+)", line)
        assert link, line
        assert token_bits(link.group(2)) >= 128
        if sys.platform.startswith("linux"):
            assert link.group(1) != "127.0.0.1"
        jar = aiohttp.CookieJar(unsafe=True)
        async with (
            aiohttp.ClientSession(cookie_jar=jar) as http,
            http.get(link.group()) as response,
        ):
            assert response.status == 200
