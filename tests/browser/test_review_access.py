"""The review page's session in a real browser: another local server (on 127.0.0.1, another
port) never receives it, it is not the token, and a name that resolves to the page's address
(DNS rebinding) gets nothing."""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from playwright.async_api import Browser, async_playwright

from koalabot.review.access import COOKIE
from koalabot.store.database import open_database
from tests.browser.conftest import CHROMIUM_ARGS
from tests.helpers_data import Seed
from tests.helpers_review import review_process

pytestmark = pytest.mark.browser


@pytest.fixture
async def review_link(sqlite_url: str) -> AsyncIterator[re.Match[str]]:
    """`koalabot review` with a token it made: the link it printed (host, port, token)."""
    db = await open_database(sqlite_url)
    t = await Seed(db).thread(platform="slack", channel="C1")
    await t.ask("What is a koala?", author="U1")
    await t.vote(await t.answer("A marsupial."), "U1", 1)
    await db.close()
    env = {k: v for k, v in os.environ.items() if k != "KOALABOT_REVIEW_TOKEN"}
    async with review_process(sqlite_url, env) as line:
        printed = r"http://(?P<host>127(?:\.\d+){3}):(?P<port>\d+)/\?token=(?P<token>\S+)"
        link = re.search(printed, line)
        assert link, line
        yield link


@pytest.fixture
async def other_server() -> AsyncIterator[tuple[str, list[str]]]:
    """Another local web server (a dev server, a notebook): its address, and the Cookie headers
    it received."""
    received: list[str] = []

    async def page(request: web.Request) -> web.Response:
        received.append(request.headers.get("Cookie", ""))
        return web.Response(text="<h1>another local server</h1>", content_type="text/html")

    app = web.Application()
    app.router.add_get("/", page)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/", received
    finally:
        await runner.cleanup()


async def test_another_local_server_never_receives_the_session(
    browser: Browser, review_link: re.Match[str], other_server: tuple[str, list[str]]
) -> None:
    context = await browser.new_context()
    page = await context.new_page()
    opened = await page.goto(review_link.group())
    assert opened is not None and opened.status == 200
    cookies = await context.cookies()
    assert [c["name"] for c in cookies] == [COOKIE]
    (session,) = cookies
    assert session["domain"] == review_link["host"]
    assert session["httpOnly"] and session["sameSite"] == "Strict"
    assert review_link["token"] not in session["value"]
    assert await page.evaluate("document.cookie") == ""

    other, received = other_server
    await page.goto(other)
    await page.goto(other + "?again")
    assert len(received) == 2
    assert not any(COOKIE in header for header in received), received
    await context.close()


async def test_a_rebound_name_gets_nothing(chromium: Path, review_link: re.Match[str]) -> None:
    rule = f"--host-resolver-rules=MAP rebind.example {review_link['host']}"
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(chromium), args=[*CHROMIUM_ARGS, rule]
        )
        try:
            page = await browser.new_page()
            url = f"http://rebind.example:{review_link['port']}/?token={review_link['token']}"
            response = await page.goto(url)
            assert response is not None and response.status == 421
            assert await page.context.cookies() == []
        finally:
            await browser.close()
