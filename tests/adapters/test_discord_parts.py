"""The small pure pieces of the Discord adapter: thread titles, votes from emoji, button ids."""

from __future__ import annotations

import re

import discord
import pytest

from koalabot.events import ThreadKey
from koalabot_adapters.discord.app import THREAD_NAME_CHARS, thread_key, thread_name
from koalabot_adapters.discord.buttons import TEMPLATE, feedback_view, reaction_rating


@pytest.mark.parametrize(
    ("question", "title"),
    [
        ("What do koalas eat?", "What do koalas eat?"),
        ("  Two   spaces\nand a second line", "Two spaces"),
        ("", "Koala"),
        ("\n\nstarts with blank lines", "starts with blank lines"),
    ],
)
def test_thread_titles_come_from_the_first_line(question: str, title: str) -> None:
    assert thread_name(question) == title


def test_long_thread_titles_are_cut_with_an_ellipsis() -> None:
    title = thread_name("koala " * 40)
    assert len(title) == THREAD_NAME_CHARS and title.endswith("…")


def test_dm_conversations_have_no_workspace() -> None:
    assert thread_key(None, 5, "9") == ThreadKey("discord", "", "5", "9")
    assert thread_key(1, 5, 5) == ThreadKey("discord", "1", "5", "5")


@pytest.mark.parametrize(
    ("emoji", "rating"),
    [
        (discord.PartialEmoji(name="👍"), 1),
        (discord.PartialEmoji(name="👎"), -1),
        (discord.PartialEmoji(name="👍🏿"), 1),
        (discord.PartialEmoji(name="👎🏻"), -1),
        (discord.PartialEmoji(name="👍\ufe0f"), 1),
        (discord.PartialEmoji(name="🎉"), None),
        (discord.PartialEmoji(name="thumbsup", id=123), None),  # a server's custom emoji
    ],
)
def test_only_thumbs_reactions_are_votes(emoji: discord.PartialEmoji, rating: int | None) -> None:
    assert reaction_rating(emoji) == rating


def test_buttons_carry_the_answer_id_within_discords_limit() -> None:
    view = feedback_view(2**63 - 1)
    ids = [button["custom_id"] for button in view.to_components()[0]["components"]]
    assert ids == [f"kb:{a}:{2**63 - 1}" for a in ("up", "down", "regen")]
    assert all(len(i) <= 100 and re.fullmatch(TEMPLATE, i) for i in ids)
    assert view.is_persistent() and view.timeout is None
