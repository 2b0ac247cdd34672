"""Battles end to end: the real Slack and Discord adapters and Engine against the fake Slack, the
fake Discord and two fake model servers. Two answers come, A then B; B carries the one choice;
a click records it, and the thread's next prompt holds the preferred answer, not the other."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from koalabot.adapter import RunOptions
from koalabot.engine.engine import Engine
from koalabot.engine.notices import NOT_THIS_ANSWER, chose
from koalabot.store.database import open_database
from koalabot.store.judgements import judgements_on
from koalabot_adapters.discord.app import DiscordAdapter
from koalabot_adapters.slack.buttons import ACTION_CHOICE
from tests.adapters.slack.test_app import mention
from tests.fakes.discord import FakeChannel, FakeDiscord, FakeMessage, FakeUser
from tests.fakes.slack import FakeSlack, Message
from tests.fakes.tgi import FakeTGI
from tests.fixtures.discord import GUILD_READY_TIMEOUT, DiscordBot, discord_settings_for
from tests.fixtures.slack import StartSlackBot
from tests.models.test_engine_models import SERVER_SAYS, servers

__all__ = ["servers"]  # the two model servers, as a fixture


@contextlib.asynccontextmanager
async def discord_bot_with(
    fake: FakeDiscord, tgi: FakeTGI, database_url: str, overrides: dict[str, Any]
) -> AsyncIterator[DiscordBot]:
    """The Discord adapter on the fake Discord with ``overrides`` (the models, the battles)."""
    settings = discord_settings_for(fake, tgi, database_url, **overrides)
    await (await open_database(database_url, upgrade=True)).close()
    engine = await Engine.open(settings)
    adapter = DiscordAdapter(
        engine, settings, RunOptions(), guild_ready_timeout=GUILD_READY_TIMEOUT
    )
    try:
        await adapter.start()
        yield DiscordBot(fake, tgi, settings, engine, adapter)
    finally:
        await adapter.stop()
        await engine.close()


def models_setting(servers: dict[str, FakeTGI]) -> str:
    return ",".join(f"{name}={fake.url}" for name, fake in servers.items())


def model_of(text: str) -> str:
    return next(name for name, says in SERVER_SAYS.items() if says in text)


def is_choice(button: dict[str, object]) -> bool:
    return str(button.get("action_id", "")).startswith(ACTION_CHOICE)


async def battle_in(slack: FakeSlack, root: Message, nth: int = 1) -> tuple[Message, Message]:
    """The ``nth`` battle of a thread once answer B shows its choice: (answer A, answer B)."""

    def done() -> tuple[Message, Message] | None:
        replies = [m for m in slack.bot_replies(root.channel, root.ts) if "*Answer" in m.shown]
        if len(replies) < 2 * nth or not any(is_choice(b) for b in replies[2 * nth - 1].buttons):
            return None
        return replies[2 * nth - 2], replies[2 * nth - 1]

    return await slack.wait_for(done)


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
async def test_a_slack_battle_is_chosen_under_b_and_the_thread_goes_on_with_the_choice(
    start_slack_bot: StartSlackBot, servers: dict[str, FakeTGI]
) -> None:
    bot = await start_slack_bot("http", models=models_setting(servers), battle_channels="C0GENERAL")
    slack = bot.slack
    root = await slack.user_posts(mention(slack, "what do koalas eat?"))
    a, b = await battle_in(slack, root)

    assert "*Answer A*" in a.shown and "*Answer B*" in b.shown
    assert {model_of(a.shown), model_of(b.shown)} == {"koala", "candidate"}
    assert not any(is_choice(button) for button in a.buttons)
    assert [btn["text"]["text"] for btn in b.buttons if is_choice(btn)] == [
        "A is better",
        "B is better",
        "Tie",
        "Both bad",
    ]
    assert "koala" not in a.shown + b.shown and "candidate" not in a.shown + b.shown  # blind

    await slack.click(b, ACTION_CHOICE + "b", user="U0ALICE")
    await slack.wait_for(lambda: len(slack.ephemerals) == 1)
    assert [(e.user, e.text) for e in slack.ephemerals] == [("U0ALICE", chose("b"))]
    a_id, b_id = (int(v) for v in next(filter(is_choice, b.buttons))["value"].split(":"))
    assert [(j.a_id, j.b_id, j.choice) for j in await judgements_on(bot.engine.db, [a_id])] == [
        (a_id, b_id, "b")
    ]

    await slack.user_posts("and how much?", thread_ts=root.ts)
    await battle_in(slack, root, nth=2)
    winner, loser = model_of(b.shown), model_of(a.shown)
    for fake in servers.values():
        assert "and how much?" in fake.prompts[-1]
        assert SERVER_SAYS[winner] in fake.prompts[-1]
        assert SERVER_SAYS[loser] not in fake.prompts[-1]
    await slack.settle()


def slow_answers(servers: dict[str, FakeTGI]) -> None:
    """Each model streams a 24-word answer, a word every 30 ms (about 0.7 s)."""
    for name, fake in servers.items():
        fake.token_delay = 0.03
        fake.replies.append(SERVER_SAYS[name] + " " + " ".join(f"w{n}" for n in range(20)))


def side_by_side(timeline: list[tuple[float, str, str]], a: str, b: str) -> bool:
    """Whether B's first words showed before A's last text (A's label comes with its end)."""
    b_words = min(t for t, message, text in timeline if message == b and "w0" in text)
    a_done = min(t for t, message, text in timeline if message == a and "*Answer A*" in text)
    return b_words < a_done


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("streaming", ["on", "off"])
async def test_a_slack_battle_streams_a_and_b_side_by_side(
    start_slack_bot: StartSlackBot, servers: dict[str, FakeTGI], streaming: str
) -> None:
    slow_answers(servers)
    bot = await start_slack_bot(
        "http",
        models=models_setting(servers),
        battle_channels="C0GENERAL",
        slack_streaming=streaming,
    )
    slack = bot.slack
    root = await slack.user_posts(mention(slack, "what do koalas eat?"))
    a, b = await battle_in(slack, root)

    assert float(a.ts) < float(b.ts)  # A shows above B
    timeline = [(t, ts, text) for t, _, ts, text in slack.timeline]
    assert side_by_side(timeline, a.ts, b.ts)
    await slack.settle()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_slack_choice_forged_onto_another_message_changes_nothing(
    start_slack_bot: StartSlackBot, servers: dict[str, FakeTGI]
) -> None:
    bot = await start_slack_bot("http", models=models_setting(servers), battle_channels="C0GENERAL")
    slack = bot.slack
    first = await slack.user_posts(mention(slack, "what do koalas eat?"))
    _, b = await battle_in(slack, first)
    second = await slack.user_posts(mention(slack, "and wombats?"))
    _, other_b = await battle_in(slack, second)
    theirs = next(filter(is_choice, b.buttons))["value"]
    for button in other_b.buttons:
        if is_choice(button):
            button["value"] = theirs  # a button that names the first thread's battle

    await slack.click(other_b, ACTION_CHOICE + "a", user="U0ALICE")
    await slack.wait_for(lambda: len(slack.ephemerals) == 1)

    assert slack.ephemerals[0].text == NOT_THIS_ANSWER
    a_id = int(theirs.split(":")[0])
    assert await judgements_on(bot.engine.db, [a_id]) == []
    await slack.settle()


async def discord_asks(
    bot: DiscordBot, person: FakeUser, text: str
) -> tuple[FakeChannel, list[FakeMessage]]:
    """``person`` mentions the bot in #general: the thread it opens and the battle there."""
    fake = bot.discord
    question = await fake.say(person, fake.channel_id, text, mention_bot=True)
    thread = await fake.wait_for(lambda: fake.thread_for(question.id))
    return thread, await discord_battle(bot, thread.id)


def discord_choice(message: FakeMessage, choice: str) -> str:
    return next(c for c in message.custom_ids if c.startswith(f"kb:battle:{choice}:"))


async def discord_battle(bot: DiscordBot, thread_id: int, nth: int = 1) -> list[FakeMessage]:
    """The ``nth`` battle of a thread once answer B shows its choice: [answer A, answer B]."""

    def done() -> list[FakeMessage] | None:
        shown = [m for m in bot.discord.bot_messages(thread_id) if "*Answer" in m.content]
        pair = shown[2 * nth - 2 : 2 * nth]
        ready = len(pair) == 2 and any(c.startswith("kb:battle:") for c in pair[1].custom_ids)
        return pair if ready else None

    pair = await bot.discord.wait_for(done)
    assert await bot.adapter.drain(10)
    return pair


@pytest.mark.parametrize(
    ("database_url", "by"),
    [("sqlite", "share"), ("postgres", "share"), ("sqlite", "channel")],
    indirect=["database_url"],
)
async def test_a_discord_battle_is_chosen_under_b_and_the_thread_goes_on_with_the_choice(
    fake_discord: FakeDiscord, servers: dict[str, FakeTGI], database_url: str, by: str
) -> None:
    """Every thread a battle (KOALABOT_BATTLE_SHARE=1), or the threads the bot opens from a
    battle channel (KOALABOT_BATTLE_CHANNELS names #general, the thread's parent)."""
    general = str(fake_discord.channel_id)
    battles = {"battle_share": 1.0} if by == "share" else {"battle_channels": general}
    overrides = {"models": models_setting(servers), **battles}
    async with discord_bot_with(fake_discord, servers["koala"], database_url, overrides) as bot:
        alice = fake_discord.add_user("alice")
        thread, (a, b) = await discord_asks(bot, alice, "What do koalas eat?")

        assert "*Answer A*" in a.content and "*Answer B*" in b.content
        assert {model_of(a.content), model_of(b.content)} == {"koala", "candidate"}
        assert not any(c.startswith("kb:battle:") for c in a.custom_ids)
        assert [c.rsplit(":", 2)[0] for c in b.custom_ids if c.startswith("kb:battle:")] == [
            f"kb:battle:{choice}" for choice in ("a", "b", "tie", "both_bad")
        ]
        click = await fake_discord.click(alice, b.id, discord_choice(b, "a"))
        await fake_discord.wait_for(lambda: click.replies)
        assert [r.content for r in click.replies] == [chose("a")]
        _, _, _, a_id, b_id = discord_choice(b, "a").split(":")
        judged = await judgements_on(bot.engine.db, [int(a_id)])
        assert [(j.b_id, j.user, j.choice) for j in judged] == [(int(b_id), str(alice.id), "a")]

        await fake_discord.say(alice, thread.id, "And how much?")
        await discord_battle(bot, thread.id, nth=2)
        winner, loser = model_of(a.content), model_of(b.content)
        for fake in servers.values():
            assert "And how much?" in fake.prompts[-1]
            assert SERVER_SAYS[winner] in fake.prompts[-1]
            assert SERVER_SAYS[loser] not in fake.prompts[-1]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_discord_battle_streams_a_and_b_side_by_side(
    fake_discord: FakeDiscord, servers: dict[str, FakeTGI], database_url: str
) -> None:
    slow_answers(servers)
    overrides = {"models": models_setting(servers), "battle_share": 1.0}
    async with discord_bot_with(fake_discord, servers["koala"], database_url, overrides) as bot:
        alice = fake_discord.add_user("alice")
        _, (a, b) = await discord_asks(bot, alice, "What do koalas eat?")

        assert a.id < b.id  # A shows above B
        timeline = [(t, str(message), text) for t, message, text in fake_discord.timeline]
        assert side_by_side(timeline, str(a.id), str(b.id))
