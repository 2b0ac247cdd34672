"""Votes from Discord: persistent 👍 👎 🔄 buttons that carry the answer id, and thumbs reactions.

The buttons are `DynamicItem`s: discord.py routes a click by matching the custom_id against the
template, so a button under an answer posted before a restart still works and the client keeps
no per-message view in memory.
"""

from __future__ import annotations

import re
from typing import Any, Protocol, runtime_checkable

import discord

#: action → emoji shown on the button
ACTIONS = {"up": "👍", "down": "👎", "regen": "🔄"}
TEMPLATE = r"kb:(?P<action>up|down|regen):(?P<answer>[0-9]+)"
RATINGS = {"up": 1, "down": -1}

_THUMBS = {"👍": 1, "👎": -1}
_MODIFIERS = re.compile("[\U0001f3fb-\U0001f3ff\ufe0f]")  # skin tones, emoji presentation


@runtime_checkable
class ButtonTarget(Protocol):
    """What a client offers the buttons: one coroutine that handles a click."""

    async def on_feedback_button(
        self, interaction: discord.Interaction[Any], action: str, answer_id: int
    ) -> None: ...


class FeedbackButton(discord.ui.DynamicItem[discord.ui.Button[discord.ui.View]], template=TEMPLATE):
    """One of 👍 👎 🔄 under an answer; its custom_id is `kb:<action>:<answer id>`."""

    def __init__(self, action: str, answer_id: int) -> None:
        super().__init__(
            discord.ui.Button(
                style=discord.ButtonStyle.secondary,
                emoji=ACTIONS[action],
                custom_id=f"kb:{action}:{answer_id}",
            )
        )
        self.action = action
        self.answer_id = answer_id

    @classmethod
    async def from_custom_id(
        cls,
        interaction: discord.Interaction[Any],
        item: discord.ui.Item[Any],
        match: re.Match[str],
        /,
    ) -> FeedbackButton:
        return cls(match["action"], int(match["answer"]))

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        client = interaction.client
        if isinstance(client, ButtonTarget):
            await client.on_feedback_button(interaction, self.action, self.answer_id)


def feedback_view(answer_id: int) -> discord.ui.View:
    """The row of buttons attached to the last message of a finished answer."""
    view = discord.ui.View(timeout=None)
    for action in ACTIONS:
        view.add_item(FeedbackButton(action, answer_id))
    return view


def retry_view(answer_id: int) -> discord.ui.View:
    """The 🔄 alone, under the notice of a failed answer (it regenerates that answer)."""
    view = discord.ui.View(timeout=None)
    view.add_item(FeedbackButton("regen", answer_id))
    return view


def reaction_rating(emoji: discord.PartialEmoji) -> int | None:
    """+1 for 👍, -1 for 👎 (any skin tone), None for every other reaction."""
    if emoji.id is not None:  # a server's custom emoji
        return None
    return _THUMBS.get(_MODIFIERS.sub("", emoji.name or ""))
