"""Bad input on the bot's HTTP surfaces is a 4xx with a short answer, never a 500 or a
traceback: the Slack events endpoint (real bolt, HTTP mode) and the review page."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from koalabot.review.app import review_app
from koalabot.store.database import open_database
from tests.fixtures.slack import StartSlackBot
from tests.helpers_data import Seed

TOKEN = "0123456789abcdef0123456789abcdef-bad-requests"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize(
    ("raw", "timestamp"),
    [
        (b'{"type": "event_callback", "text": "caf\xe9"}', None),  # Latin-1, not UTF-8
        (b"\xff\xfe\x00\x00", None),
        (b'{"type": "event_callback"}', "yesterday"),
        (b'{"type": "event_callback"}', "\u0661\u0662\u0663"),  # Arabic-Indic digits
        (b'{"type": "event_callback"}', "1e9"),
    ],
)
async def test_slack_events_with_a_bad_body_or_timestamp_are_401(
    start_slack_bot: StartSlackBot,
    caplog: pytest.LogCaptureFixture,
    raw: bytes,
    timestamp: str | None,
) -> None:
    bot = await start_slack_bot("http")
    headers = {} if timestamp is None else {"X-Slack-Request-Timestamp": timestamp}
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            bot.adapter.url,
            data=raw,
            headers={"Content-Type": "application/json", "X-Slack-Signature": "v0=00", **headers},
        ) as response,
    ):
        assert response.status == 401
        assert "Traceback" not in await response.text()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.fixture
async def review_base(sqlite_url: str) -> AsyncIterator[tuple[str, int]]:
    db = await open_database(sqlite_url)
    t = await Seed(db).thread(platform="slack", channel="C1")
    await t.ask("What is a koala?", author="U1")
    answer = await t.answer("A marsupial.")
    await t.vote(answer, "U1", 1)
    server = TestServer(review_app(db, TOKEN, "ana"), host="127.0.0.1", port=0)
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/"), answer
    finally:
        await server.close()
        await db.close()


def _browser() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        cookie_jar=aiohttp.CookieJar(unsafe=True),
        headers={"Authorization": f"Bearer {TOKEN}"},
    )


@pytest.mark.parametrize(
    "path",
    [
        "/answers/abc",
        "/answers/99999999999999999999999999",
        "/answers/9223372036854775808",
        "/answers/%D9%A1%D9%A2",  # Arabic-Indic digits
        "/?before=99999999999999999999999999",
        "/?after=-1",
        "/?since=0000-01-01",
        "/?until=9999-12-31",
        "/?since=2024-13-45",
    ],
)
async def test_review_page_bad_addresses_are_4xx_or_ignored(
    review_base: tuple[str, int], caplog: pytest.LogCaptureFixture, path: str
) -> None:
    base, _answer = review_base
    async with _browser() as http, http.get(base + path) as response:
        assert response.status in (200, 400, 404), await response.text()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize(
    "cookie",
    ["koalabot_review=\u00e9t\u00e9", 'koalabot_review="unterminated', "koalabot_review=a;;b=c"],
)
async def test_review_page_malformed_cookie_is_401(
    review_base: tuple[str, int], caplog: pytest.LogCaptureFixture, cookie: str
) -> None:
    base, _answer = review_base
    async with (
        aiohttp.ClientSession() as http,
        http.get(base + "/", headers={"Cookie": cookie}) as response,
    ):
        assert response.status in (400, 401)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize(
    ("target", "location"),
    [
        ("/\r\nSet-Cookie: evil=1", "/"),
        ("/\x00", "/"),
        ("/\\evil.example", "/"),
        ("/\t/evil.example", "/"),
        ("https://evil.example/", "/"),
        ("/?state=unreviewed", "/?state=unreviewed"),
    ],
)
async def test_review_redirect_targets_stay_on_the_page(
    review_base: tuple[str, int], caplog: pytest.LogCaptureFixture, target: str, location: str
) -> None:
    base, answer = review_base
    async with (
        _browser() as http,
        http.post(
            f"{base}/answers/{answer}/review",
            data={"decision": "include", "next": target},
            allow_redirects=False,
        ) as response,
    ):
        assert response.status == 303, await response.text()
        assert response.headers["Location"] == f"{location}#answer-{answer}"
        assert "evil" not in "".join(response.headers.getall("Set-Cookie", []))
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
