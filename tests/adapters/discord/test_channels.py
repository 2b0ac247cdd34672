"""Channel settings reach the threads the bot opens: on Discord a thread is a channel of its own,
so KOALABOT_ALLOWED_CHANNELS (and KOALABOT_BATTLE_CHANNELS, tests/models) name the channel a
thread was opened from, and a click or reaction in it counts after a restart as well."""

from __future__ import annotations

from typing import Any

import pytest

from tests.adapters.discord.test_app import answer_id, answers, ask
from tests.fakes.discord import FakeDiscord
from tests.fixtures.db import eventually
from tests.fixtures.discord import DiscordBot


@pytest.fixture
def discord_overrides(fake_discord: FakeDiscord) -> dict[str, Any]:
    """Only #general is let in."""
    return {"allowed_channels": str(fake_discord.channel_id)}


async def test_an_allowed_channel_s_threads_are_answered_and_voted_in(
    discord_bot: DiscordBot,
) -> None:
    fake, tgi = discord_bot.discord, discord_bot.tgi
    tgi.replies.extend(["Eucalyptus.", "About half a kilogram."])
    alice = fake.add_user("alice")

    thread, first = await ask(discord_bot, alice, "What do koalas eat?")
    await fake.say(alice, thread.id, "How much a day?")
    second = (await answers(fake, thread.id, 2))[1]
    up = await fake.click(alice, second.id, f"kb:up:{answer_id(second)}")
    await fake.wait_for(lambda: up.replies)

    assert (first.content, second.content) == ("Eucalyptus.", "About half a kilogram.")
    assert up.replies[0].content == "Thanks, I noted your 👍."
    await eventually(lambda: discord_bot.engine.repo.votes(answer_id(second)), {str(alice.id): 1})
