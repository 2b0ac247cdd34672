"""The review page in a real browser: open it with the token, filter, exclude one answer with a
reason and correct another with the keyboard, then check what `koalabot export` writes.

Set KOALABOT_DOCS_SCREENSHOT=1 to also write the README's screenshot, docs/review.png.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page, expect
from sqlalchemy import update

from koalabot.cli import main
from koalabot.store.database import Database, open_database
from koalabot.store.models import Generation, Review
from tests.browser.conftest import OUTPUT
from tests.helpers_data import Seed, table_rows

pytestmark = pytest.mark.browser

DOCS = Path(__file__).resolve().parents[2] / "docs"


async def timed(db: Database, answer: int, ttft: float, total: float, tokens: int) -> None:
    """Give an answer's generation record the timings a real server reports."""
    async with db.engine.begin() as conn:
        await conn.execute(
            update(Generation)
            .where(Generation.message_id == answer)
            .values(
                time_to_first_token=ttft,
                total_time=total,
                prompt_tokens=tokens,
                completion_tokens=tokens // 2,
                endpoint="http://tgi-1:8080",
                parameters={"max_new_tokens": 512, "temperature": 0.7, "top_p": 0.95},
            )
        )


async def seed(db: Database) -> dict[str, int]:
    """A small workspace's worth of rated answers, oldest first."""
    s = Seed(db)
    ids: dict[str, int] = {}

    t = await s.thread(platform="slack", channel="C02HISTORY")
    await t.ask("Can you summarise the causes of the French Revolution?", author="U05KIM")
    await t.answer(
        "In short: a debt crisis after costly wars, a tax system that spared the nobility and "
        "clergy, bad harvests and bread prices, and Enlightenment ideas about rights."
    )
    await t.ask("Shorter please, one line.", author="U05KIM")
    ids["french"] = await t.answer("Debt, unfair taxes, hunger and new ideas about rights.")
    await t.vote(ids["french"], "U05KIM", 1)
    await timed(db, ids["french"], 0.22, 0.9, 140)

    t = await s.thread(platform="slack", channel="C01HELPDESK")
    await t.ask("What is the difference between a koala and a wombat?", author="U02ALEX")
    ids["wombat"] = await t.answer(
        "Both are Australian marsupials. Koalas live in eucalyptus trees and eat their leaves; "
        "wombats are burrowing grazers that eat grasses and roots."
    )
    await t.votes(ids["wombat"], {"U02ALEX": 1, "U03SAM": 1})
    await timed(db, ids["wombat"], 0.28, 2.9, 96)

    d = await s.thread(platform="discord", channel="1188800000000000042")
    await d.ask("Is the sun a planet?", author="80351110224678912")
    ids["sun"] = await d.answer("Yes, the sun is the largest planet in the solar system.")
    await d.vote(ids["sun"], "80351110224678912", -1)
    await timed(db, ids["sun"], 0.41, 1.2, 40)

    t = await s.thread(platform="slack", channel="C01HELPDESK")
    await t.ask("How do I reverse a list in Python without copying it?", author="U03SAM")
    ids["reverse"] = await t.answer("Use reversed(items); it returns a reversed copy.")
    await t.votes(ids["reverse"], {"U03SAM": -1, "U02ALEX": -1})
    await timed(db, ids["reverse"], 0.35, 1.8, 52)

    t = await s.thread(platform="slack", channel="C01HELPDESK")
    await t.ask(
        "Please draft a reply to dana@example.com and tell <@U02ALEX> to call her at "
        "+1 415-555-0132 about the key sk-live-4eC39HqLyjWDarjtT1zdp7dc.",
        author="U04DANA",
    )
    ids["private"] = await t.answer(
        "Sure! Hi Dana, Alex will call you at +1 415-555-0132 today about your key."
    )
    await t.vote(ids["private"], "U04DANA", 1)
    await timed(db, ids["private"], 0.31, 2.4, 88)
    return ids


@pytest.fixture
async def review(sqlite_url: str) -> AsyncIterator[tuple[str, dict[str, int]]]:
    """`koalabot review` on a seeded database: the link it printed, and the answers' ids."""
    db = await open_database(sqlite_url)
    ids = await seed(db)
    await db.close()
    env = {k: v for k, v in os.environ.items() if k != "KOALABOT_REVIEW_TOKEN"}
    process = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "koalabot", "review", "--port", "0", "--reviewer", "dana"],
        "--database-url",
        sqlite_url,
        stdout=subprocess.PIPE,
        env=env,
    )
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 30)).decode()
        link = re.search(r"http://127(?:\.\d+){3}:\d+/\?token=\S+", line)
        assert link, line
        yield link.group(), ids
    finally:
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), 30)


async def export_rows(url: str, fmt: str, tmp_path: Path, *options: str) -> list[dict[str, Any]]:
    out = tmp_path / f"{fmt}.jsonl"
    argv = ["export", "--format", fmt, "--out", str(out), "--database-url", url]
    argv += ["--no-pseudonymize", *options]
    assert await asyncio.to_thread(main, argv) == 0
    return [json.loads(line) for line in out.read_text().splitlines()]


def card(page: Page, answer: int) -> Any:
    return page.locator(f"#answer-{answer}")


async def test_review_in_the_browser_then_export(
    browser: Browser, review: tuple[str, dict[str, int]], sqlite_url: str, tmp_path: Path
) -> None:
    link, ids = review
    base = link.split("?")[0]
    page = await browser.new_page(viewport={"width": 1280, "height": 1000})

    denied = await page.goto(base)
    assert denied is not None and denied.status == 401
    await expect(page.locator("h1")).to_have_text("This page needs the review token")

    opened = await page.goto(link)
    assert opened is not None and opened.status == 200
    assert "token=" not in page.url
    await expect(page.locator("article.card")).to_have_count(5)

    # Filter: Slack only.
    await page.select_option("select[name=platform]", "slack")
    await page.click("form.filters button[type=submit]")
    await page.wait_for_url(re.compile(r"platform=slack"))
    await expect(page.locator("article.card")).to_have_count(4)
    await expect(card(page, ids["sun"])).to_have_count(0)

    # The newest answer is selected; exclude it as private: x, then 3.
    private = card(page, ids["private"])
    await expect(private).to_have_class(re.compile(r"\bcurrent\b"))
    await expect(private.locator("mark.redact[data-kind=email]")).to_have_text("dana@example.com")
    await expect(private.locator("mark.redact[data-kind=phone]").first).to_be_visible()
    await page.keyboard.press("x")
    await page.keyboard.press("3")
    await expect(private.locator(".badge")).to_have_text("excluded: private")

    # The page moved on to the next answer: correct it, c then Ctrl+Enter.
    reverse = card(page, ids["reverse"])
    await expect(reverse).to_have_class(re.compile(r"\bcurrent\b"))
    await page.keyboard.press("c")
    correction = reverse.locator("textarea")
    await expect(correction).to_be_focused()
    await correction.fill("Use items.reverse(): it reverses the list in place, without a copy.")
    await page.keyboard.press("Control+Enter")
    await expect(reverse.locator(".badge")).to_have_text("corrected")
    await expect(reverse.locator(".turn.correction")).to_contain_text("items.reverse()")

    # And include the last one with i.
    wombat = card(page, ids["wombat"])
    await expect(wombat).to_have_class(re.compile(r"\bcurrent\b"))
    await page.keyboard.press("i")
    await expect(wombat.locator(".badge")).to_have_text("included")

    # The page moved on to the oldest answer; k goes back up. The decisions survive a reload.
    await expect(card(page, ids["french"])).to_have_class(re.compile(r"\bcurrent\b"))
    await page.keyboard.press("k")
    await expect(wombat).to_have_class(re.compile(r"\bcurrent\b"))
    await page.reload()
    await expect(card(page, ids["private"]).locator(".badge")).to_have_text("excluded: private")
    await expect(card(page, ids["private"]).locator(".decided")).to_contain_text("by dana")

    await screenshot(page, ids)

    reviews = {row["message_id"]: row for row in await table_rows_at(sqlite_url)}
    assert {k: reviews[ids[k]]["decision"] for k in ("private", "reverse", "wombat")} == {
        "private": "exclude",
        "reverse": "correct",
        "wombat": "include",
    }
    assert {row["reviewer"] for row in reviews.values()} == {"dana"}

    # The export honours the decisions.
    sft = await export_rows(sqlite_url, "sft", tmp_path)
    answers = [row["completion"][0]["content"] for row in sft]
    assert answers == [
        "Debt, unfair taxes, hunger and new ideas about rights.",
        "Both are Australian marsupials. Koalas live in eucalyptus trees and eat their leaves; "
        "wombats are burrowing grazers that eat grasses and roots.",
        "Use items.reverse(): it reverses the list in place, without a copy.",
    ]
    kto = await export_rows(sqlite_url, "kto", tmp_path)
    labelled = [(row["completion"][0]["content"][:20], row["label"]) for row in kto]
    assert labelled == [
        ("Debt, unfair taxes, ", True),
        ("Both are Australian ", True),
        ("Yes, the sun is the ", False),
        ("Use reversed(items);", False),  # the original, as it was voted
        ("Use items.reverse():", True),  # the correction, as a liked answer
    ]
    dpo = await export_rows(sqlite_url, "dpo", tmp_path)
    assert [
        (row["chosen"][0]["content"][:20], row["rejected"][0]["content"][:20]) for row in dpo
    ] == [("Use items.reverse():", "Use reversed(items);")]
    reviewed = await export_rows(sqlite_url, "kto", tmp_path, "--reviewed-only")
    assert [(row["completion"][0]["content"][:20], row["label"]) for row in reviewed] == [
        ("Both are Australian ", True),
        ("Use items.reverse():", True),
    ]
    everything = json.dumps(kto + sft + dpo)
    assert "Alex will call you" not in everything


async def table_rows_at(url: str) -> list[dict[str, Any]]:
    db = await open_database(url)
    try:
        return await table_rows(db, Review)
    finally:
        await db.close()


async def screenshot(page: Page, ids: dict[str, int]) -> None:
    """The page as a reviewer sees it mid-way: a CI artefact, and on request the README's."""
    await page.goto(page.url.split("?")[0] + "?platform=slack")
    await card(page, ids["wombat"]).locator("details.generation").evaluate("d => d.open = true")
    await page.evaluate("window.scrollTo(0, 0)")
    OUTPUT.mkdir(exist_ok=True)
    await page.screenshot(path=str(OUTPUT / "review.png"), full_page=True)
    if os.environ.get("KOALABOT_DOCS_SCREENSHOT") == "1":
        DOCS.mkdir(exist_ok=True)
        await page.screenshot(path=str(DOCS / "review.png"), full_page=True)


async def test_the_unreviewed_filter_and_the_help_in_the_browser(
    browser: Browser, review: tuple[str, dict[str, int]]
) -> None:
    link, ids = review
    page = await browser.new_page(viewport={"width": 1100, "height": 800})
    await page.goto(link)

    await page.keyboard.press("i")  # include the newest
    await expect(card(page, ids["private"]).locator(".badge")).to_have_text("included")
    await page.goto(page.url.split("?")[0].split("#")[0] + "?state=unreviewed")
    await expect(page.locator("article.card")).to_have_count(4)
    await expect(page.locator("[data-total]")).to_have_text("4")

    await page.keyboard.press("?")
    await expect(page.locator("dialog#help")).to_be_visible()
    await expect(page.locator("dialog#help")).to_contain_text("exclude, with the reason")
