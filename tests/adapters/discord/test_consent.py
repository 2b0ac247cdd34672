"""People on Discord opt out and back in themselves (issue 16, item 7): the consent notice names
/optout and carries an Opt out button; /optout, /optin and the button take effect for exports at
once. The real discord.py client and Engine against the fake Discord and TGI."""

from __future__ import annotations

import pytest

from koalabot.config import DEFAULT_NOTICE
from koalabot.engine.notices import OPTED_IN, OPTED_OUT
from tests.adapters.discord.test_app import answer_id, answers, ask
from tests.export.consent import exported
from tests.fakes.discord import EPHEMERAL
from tests.fixtures.discord import DiscordBot


@pytest.mark.parametrize("discord_overrides", [{"notice": DEFAULT_NOTICE}])
async def test_people_opt_out_and_back_in_with_a_button_and_commands(
    discord_bot: DiscordBot,
) -> None:
    fake, tgi, url = discord_bot.discord, discord_bot.tgi, discord_bot.settings.database_url
    tgi.replies.extend(["Koalas sleep a lot.", "Up to 20 hours."])
    alice, carol = fake.add_user("alice"), fake.add_user("carol")
    assert {"new", "optout", "optin"} <= {c["name"] for c in fake.commands}
    thread, first = await ask(discord_bot, alice, "Do koalas sleep? my-secret-words")
    assert "/optout" in first.content and "click Opt out below" in first.content
    assert "terminal" not in first.content
    assert "kb:optout" in first.custom_ids
    vote = await fake.click(carol, first.id, f"kb:up:{answer_id(first)}")
    await fake.wait_for(lambda: vote.replies)
    assert "my-secret-words" in await exported(url)

    button = await fake.click(alice, first.id, "kb:optout")
    await fake.wait_for(lambda: button.replies or button.callbacks)
    assert "my-secret-words" not in await exported(url)  # at once

    back_in = await fake.slash(alice, thread.id, "optin")
    await fake.wait_for(lambda: back_in.replies or back_in.callbacks)
    assert "my-secret-words" in await exported(url)
    command = await fake.slash(alice, thread.id, "optout")
    await fake.wait_for(lambda: command.replies or command.callbacks)
    assert "my-secret-words" not in await exported(url)

    said = [i.callbacks[0]["data"] for i in (button, back_in, command)]
    assert [d["content"] for d in said] == [OPTED_OUT, OPTED_IN, OPTED_OUT]
    assert all(d["flags"] & EPHEMERAL for d in said)
    await fake.say(alice, thread.id, "more?")
    second = (await answers(fake, thread.id, 2))[1]
    assert "kb:optout" not in second.custom_ids and "/optout" not in second.content
