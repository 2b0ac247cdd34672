"""Votes from Discord: which reactions count, and the buttons' custom ids."""

from __future__ import annotations

import re

import discord
import pytest

from koalabot_adapters.discord.buttons import TEMPLATE, feedback_view, reaction_rating


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
