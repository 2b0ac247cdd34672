"""Votes from Discord: persistent 👍 👎 🔄 buttons that carry the answer id, and thumbs reactions;
and the Opt out button under the consent notice of a thread's first answer.

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
CONSENT_TEMPLATE = r"kb:(?P<choice>optout|optin)"
RATINGS = {"up": 1, "down": -1}
#: A battle's one choice under answer B: `kb:battle:<choice>:<answer A id>:<answer B id>`.
CHOICE_TEMPLATE = r"kb:battle:(?P<choice>a|b|tie|both_bad):(?P<a>[0-9]+):(?P<b>[0-9]+)"
CHOICE_LABELS = {"a": "A is better", "b": "B is better", "tie": "Tie", "both_bad": "Both bad"}

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


@runtime_checkable
class ConsentTarget(Protocol):
    """What a client offers the Opt out button: one coroutine that handles a click."""

    async def on_consent_button(
        self, interaction: discord.Interaction[Any], *, opt_out: bool
    ) -> None: ...


class ConsentButton(
    discord.ui.DynamicItem[discord.ui.Button[discord.ui.View]], template=CONSENT_TEMPLATE
):
    """Opt out (or back in) of training data; its custom_id is `kb:optout` or `kb:optin`."""

    def __init__(self, choice: str) -> None:
        label = "Opt out" if choice == "optout" else "Opt in"
        super().__init__(
            discord.ui.Button(
                style=discord.ButtonStyle.secondary, label=label, custom_id=f"kb:{choice}"
            )
        )
        self.choice = choice

    @classmethod
    async def from_custom_id(
        cls,
        interaction: discord.Interaction[Any],
        item: discord.ui.Item[Any],
        match: re.Match[str],
        /,
    ) -> ConsentButton:
        return cls(match["choice"])

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        client = interaction.client
        if isinstance(client, ConsentTarget):
            await client.on_consent_button(interaction, opt_out=self.choice == "optout")


@runtime_checkable
class ChoiceTarget(Protocol):
    """What a client offers a battle's choice buttons: one coroutine that handles a click."""

    async def on_choice_button(
        self, interaction: discord.Interaction[Any], a_id: int, b_id: int, choice: str
    ) -> None: ...


class ChoiceButton(
    discord.ui.DynamicItem[discord.ui.Button[discord.ui.View]], template=CHOICE_TEMPLATE
):
    """One of A is better / B is better / Tie / Both bad under a battle's answer B."""

    def __init__(self, choice: str, a_id: int, b_id: int) -> None:
        super().__init__(
            discord.ui.Button(
                style=discord.ButtonStyle.primary,
                label=CHOICE_LABELS[choice],
                custom_id=f"kb:battle:{choice}:{a_id}:{b_id}",
                row=1,
            )
        )
        self.choice, self.a_id, self.b_id = choice, a_id, b_id

    @classmethod
    async def from_custom_id(
        cls,
        interaction: discord.Interaction[Any],
        item: discord.ui.Item[Any],
        match: re.Match[str],
        /,
    ) -> ChoiceButton:
        return cls(match["choice"], int(match["a"]), int(match["b"]))

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        client = interaction.client
        if isinstance(client, ChoiceTarget):
            await client.on_choice_button(interaction, self.a_id, self.b_id, self.choice)


def feedback_view(
    answer_id: int, *, opt_out: bool = False, rival: int | None = None
) -> discord.ui.View:
    """The row of buttons attached to the last message of a finished answer (with Opt out when
    its text offers it; with ``rival``, answer A's id, a battle's choice on a row of its own)."""
    view = discord.ui.View(timeout=None)
    for action in ACTIONS:
        view.add_item(FeedbackButton(action, answer_id))
    for choice in CHOICE_LABELS if rival is not None else ():
        view.add_item(ChoiceButton(choice, rival or 0, answer_id))
    if opt_out:
        view.add_item(ConsentButton("optout"))
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
