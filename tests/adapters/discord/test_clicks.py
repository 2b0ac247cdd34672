"""A Discord button acts only on the answer of the message it is on (issue 16, item 2): the real
discord.py client and Engine against the fake Discord and TGI.

The old button is made by hand: its custom_id is rewritten to name another person's answer, as a
button posted before that id was given to someone else would (or a forged click)."""

from __future__ import annotations

import pytest

from koalabot.engine.notices import NOT_THIS_ANSWER
from tests.adapters.discord.test_app import answer_id, answers, ask
from tests.fakes.discord import EPHEMERAL, FakeMessage
from tests.fixtures.discord import DiscordBot


def now_naming(message: FakeMessage, ident: int) -> None:
    """Make the buttons under ``message`` name the answer ``ident``."""
    for row in message.components:
        for button in row.get("components", []):
            button["custom_id"] = f"{button['custom_id'].rsplit(':', 1)[0]}:{ident}"


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
async def test_an_old_button_naming_another_persons_answer_changes_nothing(
    discord_bot: DiscordBot,
) -> None:
    fake, tgi, repo = discord_bot.discord, discord_bot.tgi, discord_bot.engine.repo
    tgi.replies.extend(["Koalas sleep a lot.", "Bob, your pin is safe with me."])
    alice, bob = fake.add_user("alice"), fake.add_user("bob")
    thread, alices = await ask(discord_bot, alice, "Do koalas sleep?")
    await fake.dm(bob, "my pin is 4321")
    bobs = (await answers(fake, fake.dm_channel(bob).id))[0]
    bobs_id = answer_id(bobs)
    now_naming(alices, bobs_id)

    vote = await fake.click(alice, alices.id, f"kb:up:{bobs_id}")
    regen = await fake.click(alice, alices.id, f"kb:regen:{bobs_id}")
    await fake.wait_for(lambda: vote.replies and regen.replies)
    assert await discord_bot.adapter.drain(10)

    for click in (vote, regen):
        (reply,) = click.replies
        assert reply.content == NOT_THIS_ANSWER and reply.flags & EPHEMERAL
    assert await repo.votes(bobs_id) == {}
    assert len(tgi.prompts) == 2, "Bob's conversation was not run again"
    assert len(fake.bot_messages(thread.id)) == 1
    # Bob's own button still counts.
    own = await fake.click(bob, bobs.id, f"kb:up:{bobs_id}")
    await fake.wait_for(lambda: own.replies)
    assert await repo.votes(bobs_id) == {str(bob.id): 1}
