"""A storm of 429s from the platform while several people are answered at once: every answer still
arrives in full, once, in its own thread (the SDKs wait out Retry-After; the streamer keeps one
edit in flight and always sends the final text)."""

from __future__ import annotations

import asyncio

import pytest

from tests.fakes.discord import FakeMessage
from tests.fixtures.discord import DiscordBot
from tests.fixtures.slack import StartSlackBot

#: The behaviour does not depend on the database: SQLite only, to save time.
sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

QUESTIONS = ("What do koalas eat?", "Where do koalas live?", "How long do koalas sleep?")


@sqlite_only
async def test_slack_429_storm_delays_answers_but_loses_and_repeats_none(
    start_slack_bot: StartSlackBot,
) -> None:
    bot = await start_slack_bot("http")
    slack, tgi = bot.slack, bot.tgi
    tgi.token_delay = 0.01
    slack.rate_limit("chat.postMessage", times=2, retry_after=1)  # Slack's shortest wait: 1 s
    slack.rate_limit("chat.update", times=4, retry_after=1)

    roots = await asyncio.gather(
        *(
            slack.user_posts(f"<@{slack.bot_user_id}> {q}", user=f"U0P{i}")
            for i, q in enumerate(QUESTIONS)
        )
    )
    answers = await asyncio.gather(
        *(slack.wait_for(lambda r=r: slack.final_answer(r.channel, r.ts), 30) for r in roots)
    )

    assert [a.shown for a in answers] == [f"You said: {q}" for q in QUESTIONS]
    throttled = [c for c in slack.calls if c.status == 429]
    assert len(throttled) == 6  # the storm happened, and was waited out
    await slack.settle()
    for root in roots:
        assert len(slack.bot_replies(root.channel, root.ts)) == 1
    assert len(tgi.prompts) == len(QUESTIONS)


@sqlite_only
async def test_discord_429_storm_delays_answers_but_loses_and_repeats_none(
    discord_bot: DiscordBot,
) -> None:
    fake, tgi = discord_bot.discord, discord_bot.tgi
    tgi.token_delay = 0.01
    fake.rate_limit("PATCH", retry_after=0.2, times=8)
    fake.rate_limit("POST", "/messages", retry_after=0.2, times=3)
    people = [fake.add_user(f"person{i}") for i in range(len(QUESTIONS))]

    questions = await asyncio.gather(
        *(
            fake.say(who, fake.channel_id, q, mention_bot=True)
            for who, q in zip(people, QUESTIONS, strict=True)
        )
    )
    threads = await asyncio.gather(
        *(fake.wait_for(lambda q=q: fake.thread_for(q.id)) for q in questions)
    )

    def finished(thread_id: int) -> list[FakeMessage]:
        return [m for m in fake.bot_messages(thread_id) if m.components]

    answers = await asyncio.gather(
        *(fake.wait_for(lambda t=t: finished(t.id), 30) for t in threads)
    )

    assert [a[0].content for a in answers] == [f"You said: {q}" for q in QUESTIONS]
    assert len(fake.rate_limited) == 11
    for thread in threads:
        assert len(fake.bot_messages(thread.id)) == 1
    assert len(tgi.prompts) == len(QUESTIONS)
