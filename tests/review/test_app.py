"""The review page over HTTP on a real socket: the token, the list, the actions (as plain form
posts, the way the page works without its script), and `koalabot review` itself."""

from __future__ import annotations

import asyncio
import html
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from koalabot.review.app import review_app
from koalabot.store.database import Database, open_database, upgrade
from koalabot.store.models import Review
from tests.helpers_data import Seed, table_rows

pytestmark = pytest.mark.compiled_build

TOKEN = "test-review-token"
ENV_TOKEN = "from-env-token-3q8ZcR1vLx7PmW2sYt"  # 128 bits or more, as `review` requires


@dataclass
class Site:
    base: str
    db: Database
    answers: dict[str, int]


async def seed(db: Database) -> dict[str, int]:
    s = Seed(db)
    t = await s.thread(platform="slack", channel="C1")
    await t.ask("What is a koala? Write to me at ana@example.com", author="U1")
    koala = await t.answer("A koala is a marsupial <b>native</b> to Australia.")
    await t.vote(koala, "U1", 1)
    d = await s.thread(platform="discord", channel="G7")
    await d.ask("Is the sun a planet?", author="42")
    sun = await d.answer("Yes, the biggest one.", model="koala-7b")
    await d.vote(sun, "42", -1)
    return {"koala": koala, "sun": sun}


@pytest.fixture
async def site(sqlite_url: str) -> AsyncIterator[Site]:
    db = await open_database(sqlite_url)
    answers = await seed(db)
    server = TestServer(review_app(db, TOKEN, "ana"), host="127.0.0.1", port=0)
    await server.start_server()
    try:
        yield Site(str(server.make_url("")).rstrip("/"), db, answers)
    finally:
        await server.close()
        await db.close()


def client(headers: dict[str, str] | None = None) -> aiohttp.ClientSession:
    """A browser-like client: keeps cookies (for 127.0.0.1 too)."""
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True), headers=headers)


async def logged_in(site: Site) -> aiohttp.ClientSession:
    session = client()
    async with session.get(f"{site.base}/?token={TOKEN}") as response:
        assert response.status == 200
    return session


async def test_without_the_token_every_page_is_401(site: Site) -> None:
    async with client() as session:
        for path in ("/", "/?state=unreviewed", f"/answers/{site.answers['koala']}"):
            async with session.get(site.base + path) as response:
                assert response.status == 401
                assert "needs the review token" in await response.text()
        async with session.get(f"{site.base}/?token=wrong") as response:
            assert response.status == 401
        async with session.post(
            f"{site.base}/answers/{site.answers['koala']}/review", data={"decision": "include"}
        ) as response:
            assert response.status == 401
    assert await table_rows(site.db, Review) == []


async def test_the_token_in_the_address_becomes_a_cookie_and_leaves_the_address(
    site: Site,
) -> None:
    async with client() as session:
        async with session.get(
            f"{site.base}/?state=unreviewed&token={TOKEN}", allow_redirects=False
        ) as response:
            assert response.status == 303
            assert response.headers["Location"] == "/?state=unreviewed"
            cookie = response.cookies["koalabot_review"]
            assert cookie["httponly"] and cookie["samesite"] == "Strict"
        async with session.get(f"{site.base}/") as response:
            assert response.status == 200
    async with (
        client(headers={"Authorization": f"Bearer {TOKEN}"}) as session,
        session.get(f"{site.base}/") as response,
    ):
        assert response.status == 200


async def test_the_list_shows_threads_votes_generation_and_marks_redactions(site: Site) -> None:
    async with await logged_in(site) as session, session.get(f"{site.base}/") as response:
        page = await response.text()

    assert "2</b> rated answers match" in page
    assert page.index("Is the sun a planet?") < page.index("What is a koala?")  # newest first
    assert (
        '<mark class="redact" data-kind="email" title="exported as [EMAIL]">ana@example.com</mark>'
        in page
    )
    assert "marsupial &lt;b&gt;native&lt;/b&gt;" in page  # text is text, never markup
    assert "👍 1" in page and "👎 1" in page
    assert "koala template" in page and "temperature=0.7" in page
    assert 'href="/static/review.css"' in page
    assert "reviewing as <b>ana</b>" in page


async def test_filters_come_from_the_address(site: Site) -> None:
    async with await logged_in(site) as session:
        async with session.get(f"{site.base}/?platform=discord") as response:
            page = await response.text()
        assert "Is the sun a planet?" in page and "What is a koala?" not in page
        async with session.get(f"{site.base}/?rating=liked&model=koala-13b") as response:
            page = await response.text()
        assert "What is a koala?" in page and "Is the sun a planet?" not in page
        async with session.get(f"{site.base}/?until=2024-04-30") as response:
            assert "No rated answers match these filters." in await response.text()


async def test_actions_as_plain_form_posts(site: Site) -> None:
    koala, sun = site.answers["koala"], site.answers["sun"]
    async with await logged_in(site) as session:
        async with session.post(
            f"{site.base}/answers/{koala}/review",
            data={"decision": "include", "next": "/?state=unreviewed"},
            allow_redirects=False,
        ) as response:
            assert response.status == 303
            assert response.headers["Location"] == f"/?state=unreviewed#answer-{koala}"
        async with session.post(
            f"{site.base}/answers/{sun}/review",
            data={"decision": "exclude", "reason": "wrong", "next": "https://evil.example/"},
            allow_redirects=False,
        ) as response:
            assert response.headers["Location"] == f"/#answer-{sun}"  # never off the site
        async with session.get(f"{site.base}/?state=reviewed") as response:
            page = await response.text()

    assert "excluded: wrong" in page
    assert re.search(r'class="badge">included</span>', page)
    rows = {row["message_id"]: row for row in await table_rows(site.db, Review)}
    assert rows[koala]["decision"] == "include" and rows[koala]["reviewer"] == "ana"
    assert (rows[sun]["decision"], rows[sun]["reason"]) == ("exclude", "wrong")


async def test_the_script_gets_the_changed_card_back(site: Site) -> None:
    sun = site.answers["sun"]
    headers = {"X-Requested-With": "koalabot-review"}
    async with await logged_in(site) as session:
        async with session.post(
            f"{site.base}/answers/{sun}/review",
            data={"decision": "correct", "correction": "No: the sun is a star."},
            headers=headers,
        ) as response:
            assert response.status == 200
            card = await response.text()
        assert card.lstrip().startswith(f'<article class="card corrected" id="answer-{sun}"')
        assert "No: the sun is a star." in card
        assert "Yes, the biggest one." in card  # the original stays
        async with session.post(f"{site.base}/answers/{sun}/undo", headers=headers) as response:
            assert 'class="card unreviewed"' in await response.text()
    assert await table_rows(site.db, Review) == []


async def test_bad_actions_say_what_is_wrong(site: Site) -> None:
    koala = site.answers["koala"]
    async with await logged_in(site) as session:
        async with session.post(
            f"{site.base}/answers/{koala}/review", data={"decision": "exclude"}
        ) as response:
            assert response.status == 400
            assert "excluding needs a reason" in await response.text()
        async with session.post(
            f"{site.base}/answers/{koala}/review", data={"decision": "delete"}
        ) as response:
            assert response.status == 400
        async with session.post(
            f"{site.base}/answers/999999/review", data={"decision": "include"}
        ) as response:
            assert response.status == 404
        async with session.post(
            f"{site.base}/answers/{koala}/review",
            data={"decision": "include"},
            headers={"Origin": "https://evil.example"},
        ) as response:
            assert response.status == 403
    assert await table_rows(site.db, Review) == []


async def test_an_empty_store_says_where_answers_come_from(sqlite_url: str) -> None:
    db = await open_database(sqlite_url)
    server = TestServer(review_app(db, TOKEN, "ana"), host="127.0.0.1", port=0)
    await server.start_server()
    try:
        async with (
            client({"Authorization": f"Bearer {TOKEN}"}) as session,
            session.get(str(server.make_url("/"))) as response,
        ):
            page = await response.text()
    finally:
        await server.close()
        await db.close()
    assert "No rated answers yet" in page


async def test_static_files_come_from_the_package(site: Site) -> None:
    async with client() as session:
        for name, kind in (("review.css", "text/css"), ("review.js", "javascript")):
            async with session.get(f"{site.base}/static/{name}") as response:
                assert response.status == 200
                assert kind in response.headers["Content-Type"]


# --- the command ------------------------------------------------------------------------------


async def test_koalabot_review_prints_a_working_link_and_stops_on_sigterm(
    sqlite_url: str,
) -> None:
    db = await open_database(sqlite_url)
    await seed(db)
    await db.close()
    env = {k: v for k, v in os.environ.items() if k != "KOALABOT_REVIEW_TOKEN"}
    command = [sys.executable, "-m", "koalabot", "review", "--port", "0"]
    process = await asyncio.create_subprocess_exec(
        *command,
        "--database-url",
        sqlite_url,
        "--reviewer",
        "bo",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 30)).decode()
        link = re.fullmatch(
            r"koalabot review: open (http://127(?:\.\d+){3}:\d+/\?token=\S+)\n", line
        )
        assert link, line
        async with client() as session, session.get(link.group(1)) as response:
            assert response.status == 200
            assert "reviewing as <b>bo</b>" in html.unescape(await response.text())
            assert "token=" not in str(response.url)
    finally:
        process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(process.wait(), 30)
    assert code == 0


async def test_koalabot_review_uses_the_token_from_the_environment(sqlite_url: str) -> None:
    await upgrade(sqlite_url)  # review reads an existing store; it never creates one
    env = {**os.environ, "KOALABOT_REVIEW_TOKEN": ENV_TOKEN}
    process = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "koalabot", "review", "--port", "0"],
        "--database-url",
        sqlite_url,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 30)).decode()
        assert ENV_TOKEN not in line
        base = re.search(r"http://127(?:\.\d+){3}:\d+/", line)
        assert base, line
        async with client() as session:
            async with session.get(base.group()) as response:
                assert response.status == 401
            async with session.get(base.group() + f"?token={ENV_TOKEN}") as response:
                assert response.status == 200
    finally:
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), 30)
