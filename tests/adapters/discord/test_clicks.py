"""A Discord button acts only on the answer of the message it is on, and a burst of clicks is
limited like messages (issue 16, items 2 and 6): the real discord.py client and Engine against
the fake Discord and TGI.

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


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # the store is incidental
@pytest.mark.parametrize("discord_overrides", [{"rate_limit_per_minute": 2}])
async def test_a_burst_of_votes_and_regenerations_is_limited(discord_bot: DiscordBot) -> None:
    fake, tgi, repo = discord_bot.discord, discord_bot.tgi, discord_bot.engine.repo
    tgi.replies.extend(["Koalas sleep a lot.", "They sleep up to 20 hours."])
    alice, carol = fake.add_user("alice"), fake.add_user("carol")
    thread, answer = await ask(discord_bot, alice, "Do koalas sleep?")  # one of alice's two
    ident = answer_id(answer)

    clicks = []
    for action in ("up", "down", "up"):  # votes have two a minute of their own
        clicks.append(await fake.click(carol, answer.id, f"kb:{action}:{ident}"))
        await fake.wait_for(lambda: clicks[-1].replies)
    await fake.click(alice, answer.id, f"kb:regen:{ident}")  # the second of alice's two
    await answers(fake, thread.id, 2)
    await fake.click(alice, answer.id, f"kb:regen:{ident}")  # one too many
    await fake.wait_for(lambda: len(fake.shown(thread.id)) == 3)

    assert await repo.votes(ident) == {str(carol.id): -1}
    assert "voting faster" in clicks[-1].replies[0].content
    assert clicks[-1].replies[0].flags & EPHEMERAL
    assert len(tgi.prompts) == 2
    assert "faster than I can keep up" in fake.shown(thread.id)[-1]
