"""A battle as people see it in Slack, drawn from what the fake Slack holds after a real run: the
real Slack adapter and Engine against the fake Slack and two fake model servers, a mention in a
battle channel, "B is better" clicked, then the thread pane drawn in Chromium
(tests/fakes/slack_picture.py) and checked the way a reader checks the picture.

The screenshot goes to tests/output/battle-slack.png; KOALABOT_DOCS_SCREENSHOT=1 also writes the
README's picture, docs/battle-slack.png (as tests/browser/test_review_page.py does for its own).
"""

from __future__ import annotations

import os
import re
import struct
from pathlib import Path

import pytest
from playwright.async_api import Browser, Locator, Page, expect

from koalabot.engine.notices import chose
from koalabot_adapters.slack.buttons import ACTION_CHOICE
from tests.adapters.slack.test_app import mention
from tests.browser.conftest import OUTPUT
from tests.fakes.slack import FakeSlack, Message
from tests.fakes.slack_picture import thread_page
from tests.fakes.tgi import FakeTGI
from tests.fixtures.slack import StartSlackBot
from tests.models.test_battle_platforms import battle_in, models_setting, servers

__all__ = ["servers"]  # the two model servers, as a fixture

pytestmark = pytest.mark.browser

DOCS = Path(__file__).resolve().parents[2] / "docs"
WIDTH = 760
#: What each model server says: short, so that the picture stays small.
SAYS = {
    "koala": " Mostly eucalyptus leaves, about half a kilogram a day.",
    "candidate": " Eucalyptus. Koalas eat the leaves of a few dozen species and little else.",
}
CHOICES = ["A is better", "B is better", "Tie", "Both bad"]


def plain(shown: str) -> list[str]:
    """The lines a reader sees of a message's mrkdwn (``*bold*`` drawn bold, not starred)."""
    lines = (re.sub(r"\*([^*\n]+)\*", r"\1", line).strip() for line in shown.splitlines())
    return [line for line in lines if line]


async def posts_of(page: Page) -> list[tuple[str, list[str]]]:
    """Each drawn message, top to bottom: its text and its buttons' texts."""
    posts: list[Locator] = await page.locator(".message").all()
    return [
        (await post.inner_text(), await post.locator(".button").all_inner_texts()) for post in posts
    ]


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk."""
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    width, height = struct.unpack(">II", head[16:24])
    return width, height


async def run_a_battle(
    start_slack_bot: StartSlackBot, servers: dict[str, FakeTGI]
) -> tuple[FakeSlack, Message]:
    """A mention in a battle channel, both answers, "B is better" clicked: the fake Slack and
    the thread's root."""
    for name, fake in servers.items():
        fake.replies.append(SAYS[name])
    bot = await start_slack_bot("http", models=models_setting(servers), battle_channels="C0GENERAL")
    slack = bot.slack
    root = await slack.user_posts(mention(slack, "what do koalas eat?"))
    _, b = await battle_in(slack, root)
    await slack.click(b, ACTION_CHOICE + "b", user="U0ALICE")
    await slack.wait_for(lambda: len(slack.ephemerals) == 1)
    await slack.settle()
    return slack, root


async def screenshot(page: Page) -> Path:
    """The whole page to tests/output (and to docs/ with KOALABOT_DOCS_SCREENSHOT=1)."""
    OUTPUT.mkdir(exist_ok=True)
    path = OUTPUT / "battle-slack.png"
    await page.screenshot(path=str(path), full_page=True)
    if os.environ.get("KOALABOT_DOCS_SCREENSHOT") == "1":
        await page.screenshot(path=str(DOCS / "battle-slack.png"), full_page=True)
    return path


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_the_battle_picture_shows_a_then_b_the_choice_under_b_and_the_private_note(
    start_slack_bot: StartSlackBot, servers: dict[str, FakeTGI], browser: Browser
) -> None:
    slack, root = await run_a_battle(start_slack_bot, servers)
    replies = slack.bot_replies(root.channel, root.ts)
    a, b = (next(m for m in replies if f"*Answer {x}*" in m.shown) for x in "AB")
    page = await browser.new_page(viewport={"width": WIDTH, "height": 400})
    await page.set_content(thread_page(slack, root.channel, root.ts, viewer="U0ALICE"))
    path = await screenshot(page)
    posts = await posts_of(page)

    texts = [text for text, _ in posts]
    assert "what do koalas eat?" in texts[0]
    at_a, at_b = (next(i for i, t in enumerate(texts) if f"Answer {x}" in t) for x in "AB")
    assert 0 < at_a < at_b
    for at, answer in ((at_a, a), (at_b, b)):
        assert all(line in texts[at] for line in plain(answer.shown)), (texts[at], answer.shown)
    assert {say.strip() for say in SAYS.values()} <= {
        line for text in texts for line in text.splitlines()
    }

    choices = [[label for label in buttons if label in CHOICES] for _, buttons in posts]
    assert choices[at_b] == CHOICES
    assert [i for i, row in enumerate(choices) if row] == [at_b], choices  # under B only

    note = page.locator(".message", has_text="Only visible to you")
    await expect(note).to_have_count(1)
    await expect(note).to_contain_text("noted your choice")
    await expect(note).to_contain_text(chose("b"))
    assert texts.index(await note.inner_text()) > at_b

    width, height = png_size(path)
    assert width == WIDTH and 300 <= height <= 2000, (width, height)
    assert path.stat().st_size < 150_000
