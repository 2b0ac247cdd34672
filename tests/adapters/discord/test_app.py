"""The Discord adapter end to end: the real discord.py client and the real Engine against the
fake Discord (REST + gateway) and the fake TGI, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from koalabot.errors import BackendUnavailableError, RateLimitedError
from koalabot_adapters.discord.app import NEW_CONVERSATION
from tests.fakes.discord import EPHEMERAL, FakeChannel, FakeDiscord, FakeMessage, FakeUser
from tests.fixtures.db import eventually
from tests.fixtures.discord import DiscordBot

#: For behaviour that does not depend on the database: run it on SQLite only, to save time.
sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


async def answers(fake: FakeDiscord, channel_id: int, count: int = 1) -> list[FakeMessage]:
    """The bot's finished answers in a channel (the ones with buttons), once there are `count`."""

    def finished() -> list[FakeMessage]:
        done = [m for m in fake.bot_messages(channel_id) if m.components]
        return done if len(done) >= count else []

    return await fake.wait_for(finished)


async def ask(bot: DiscordBot, user: FakeUser, text: str) -> tuple[FakeChannel, FakeMessage]:
    """Mention the bot in #general; the thread it opens and its answer there."""
    fake = bot.discord
    question = await fake.say(user, fake.channel_id, text, mention_bot=True)
    thread = await fake.wait_for(lambda: fake.thread_for(question.id))
    answer = (await answers(fake, thread.id))[0]
    assert await bot.adapter.drain(10)  # the engine has stored where the answer was posted
    return thread, answer


def answer_id(message: FakeMessage) -> int:
    return int(message.custom_ids[0].rsplit(":", 1)[1])


async def test_a_mention_gets_a_thread_and_a_streamed_answer(discord_bot: DiscordBot) -> None:
    fake, tgi = discord_bot.discord, discord_bot.tgi
    reply = " ".join(f"Koalas sleep {n} hours." for n in range(12, 22))
    tgi.replies.append(reply)
    alice = fake.add_user("alice")

    thread, answer = await ask(discord_bot, alice, "How long do koalas sleep?")

    assert thread.name == "How long do koalas sleep?"
    assert thread.parent_id == fake.channel_id
    assert answer.content == reply
    # Streamed: the placeholder, then growing partial texts, then the final text.
    partial = [e.removesuffix(" ▍") for e in answer.edits[1:-1]]
    assert len(partial) >= 2 and all(reply.startswith(p) for p in partial)
    assert answer.custom_ids == [f"kb:{a}:{answer_id(answer)}" for a in ("up", "down", "regen")]
    assert fake.bot_messages(fake.channel_id) == []  # nothing said in the channel itself
    assert tgi.prompts == [
        "BEGINNING OF CONVERSATION: USER: How long do koalas sleep? GPT:"
    ]  # the mention is gone, and the bot's own messages were not taken as questions
    assert fake.unhandled == []


async def test_a_follow_up_in_the_thread_keeps_the_memory(discord_bot: DiscordBot) -> None:
    fake, tgi = discord_bot.discord, discord_bot.tgi
    tgi.replies.extend(["Nice to meet you, Ada.", "Your name is Ada."])
    alice = fake.add_user("alice")
    thread, _ = await ask(discord_bot, alice, "My name is Ada.")

    await fake.say(alice, fake.channel_id, "just chatting with people, no mention")
    await fake.say(alice, thread.id, "What is my name?")
    second = (await answers(fake, thread.id, 2))[1]

    assert second.content == "Your name is Ada."
    assert tgi.prompts[1] == (
        "BEGINNING OF CONVERSATION: USER: My name is Ada. GPT:Nice to meet you, Ada.</s>"
        "USER: What is my name? GPT:"
    )
    assert len(tgi.prompts) == 2  # the unmentioned channel message was left alone


async def test_a_dm_is_one_conversation_until_slash_new(discord_bot: DiscordBot) -> None:
    fake, tgi = discord_bot.discord, discord_bot.tgi
    bob = fake.add_user("bob")
    dm = fake.dm_channel(bob)
    assert [c["name"] for c in fake.commands] == ["new"]  # registered at start-up

    await fake.dm(bob, "Remember the number 42.")
    await answers(fake, dm.id, 1)
    await fake.dm(bob, "Which number?")
    await answers(fake, dm.id, 2)
    assert "Remember the number 42." in tgi.prompts[1]

    new = await fake.slash(bob, dm.id, "new")
    await fake.wait_for(lambda: new.replies)
    assert new.replies[0].content == NEW_CONVERSATION
    await fake.dm(bob, "Which number?")
    await answers(fake, dm.id, 3)
    assert tgi.prompts[2] == "BEGINNING OF CONVERSATION: USER: Which number? GPT:"
    assert fake.thread_for(dm.id) is None  # DMs never open threads


@sqlite_only
async def test_a_rate_limited_edit_is_waited_out(discord_bot: DiscordBot) -> None:
    fake, tgi = discord_bot.discord, discord_bot.tgi
    tgi.replies.append("Eucalyptus leaves, mostly.")
    fake.rate_limit("PATCH", retry_after=0.2, times=2)

    _, answer = await ask(discord_bot, fake.add_user("alice"), "What do koalas eat?")

    assert answer.content == "Eucalyptus leaves, mostly."
    assert [method for method, _ in fake.rate_limited] == ["PATCH", "PATCH"]


@sqlite_only
async def test_a_long_answer_continues_in_a_new_message(discord_bot: DiscordBot) -> None:
    fake, tgi = discord_bot.discord, discord_bot.tgi
    tgi.token_delay = 0.001
    reply = " ".join(["Eucalyptus"] * 250)  # 2,749 characters
    tgi.replies.append(reply)

    thread, last = await ask(discord_bot, fake.add_user("alice"), "Say it many times.")

    messages = fake.bot_messages(thread.id)
    assert len(messages) == 2 and messages[-1] == last
    assert all(len(m.content) <= 2000 for m in messages)
    assert " ".join(m.content for m in messages).split() == reply.split()
    assert messages[0].components == []  # the buttons sit under the last part only


async def test_buttons_record_votes_and_answer_within_the_deadline(
    discord_bot: DiscordBot,
) -> None:
    fake = discord_bot.discord
    alice, carol = fake.add_user("alice"), fake.add_user("carol")
    _, answer = await ask(discord_bot, alice, "Are koalas bears?")
    ident = answer_id(answer)

    up = await fake.click(carol, answer.id, f"kb:up:{ident}")
    await fake.wait_for(lambda: up.replies)
    assert up.callbacks == [{"type": 5, "data": {"flags": EPHEMERAL}}] and not up.late
    assert up.replies[0].content == "Thanks, I noted your 👍."
    assert up.replies[0].flags & EPHEMERAL
    assert await discord_bot.engine.repo.votes(ident) == {str(carol.id): 1}

    down = await fake.click(carol, answer.id, f"kb:down:{ident}")
    await fake.wait_for(lambda: down.replies)
    assert await discord_bot.engine.repo.votes(ident) == {str(carol.id): -1}


async def test_thumbs_reactions_by_people_are_votes(discord_bot: DiscordBot) -> None:
    fake, repo = discord_bot.discord, discord_bot.engine.repo
    alice, robot = fake.add_user("alice"), fake.add_user("robot", bot=True)
    _, answer = await ask(discord_bot, alice, "Do koalas drink water?")
    ident = answer_id(answer)

    await fake.react(robot, answer.id, "👍")  # other bots' votes never count
    await fake.react(alice, answer.id, "🎉")  # not a vote
    await fake.react(alice, answer.id, "👍🏽")
    await eventually(lambda: repo.votes(ident), {str(alice.id): 1})
    await fake.react(alice, answer.id, "👍🏽", remove=True)
    await eventually(lambda: repo.votes(ident), {})
    await fake.react(alice, answer.id, "👎")
    await eventually(lambda: repo.votes(ident), {str(alice.id): -1})


async def test_the_regenerate_button_answers_again(discord_bot: DiscordBot) -> None:
    fake, tgi = discord_bot.discord, discord_bot.tgi
    tgi.replies.extend(["First try.", "Second try."])
    alice = fake.add_user("alice")
    thread, first = await ask(discord_bot, alice, "Tell me a koala fact.")

    again = await fake.click(alice, first.id, f"kb:regen:{answer_id(first)}")
    second = (await answers(fake, thread.id, 2))[1]

    assert again.callbacks == [{"type": 6}] and not again.late
    assert second.content == "Second try."
    assert answer_id(second) != answer_id(first)
    assert tgi.prompts[1] == tgi.prompts[0]  # the same question, answered afresh


async def test_buttons_keep_working_after_a_restart(discord_bot: DiscordBot) -> None:
    fake = discord_bot.discord
    alice = fake.add_user("alice")
    _, answer = await ask(discord_bot, alice, "Where do koalas live?")

    await discord_bot.restart()
    vote = await fake.click(alice, answer.id, f"kb:up:{answer_id(answer)}")
    await fake.wait_for(lambda: vote.replies)

    assert len(fake.identifies) == 2
    assert await discord_bot.engine.repo.votes(answer_id(answer)) == {str(alice.id): 1}


async def test_a_gateway_reconnect_neither_loses_nor_repeats_an_answer(
    discord_bot: DiscordBot,
) -> None:
    fake, tgi = discord_bot.discord, discord_bot.tgi
    alice = fake.add_user("alice")

    await fake.reconnect()  # op 7; the question below is sent while the client is away
    thread, _ = await ask(discord_bot, alice, "Asked during a reconnect")
    assert len(fake.resumes) == 1 and len(fake.identifies) == 1
    assert tgi.prompts == ["BEGINNING OF CONVERSATION: USER: Asked during a reconnect GPT:"]

    await fake.reconnect(redeliver=30)  # the resume replays events already delivered
    opened = ("POST", f"/channels/{fake.channel_id}/messages/{thread.id}/threads")
    await fake.wait_for(lambda: fake.requests.count(opened) == 2)  # the question came again
    assert await discord_bot.adapter.drain(10)

    assert len(fake.bot_messages(thread.id)) == 1
    assert len(tgi.prompts) == 1


@sqlite_only
async def test_the_model_reads_people_by_name_and_not_the_bot_mention(
    discord_bot: DiscordBot,
) -> None:
    fake, tgi = discord_bot.discord, discord_bot.tgi
    carol = fake.add_user("carol")
    text = f"is <@{carol.id}> right that koalas are <@{fake.bot.id}> marsupials?"
    question = await fake.say(
        fake.add_user("alice"), fake.channel_id, text, mention_bot=True, mentioning=[carol]
    )
    thread = await fake.wait_for(lambda: fake.thread_for(question.id))
    await answers(fake, thread.id)

    said = "is @carol right that koalas are marsupials?"
    assert thread.name == said
    assert tgi.prompts == [f"BEGINNING OF CONVERSATION: USER: {said} GPT:"]


@sqlite_only
async def test_messages_from_bots_are_ignored(discord_bot: DiscordBot) -> None:
    fake, tgi = discord_bot.discord, discord_bot.tgi
    robot = fake.add_user("robot", bot=True)
    from_robot = await fake.say(robot, fake.channel_id, "answer me", mention_bot=True)
    await ask(discord_bot, fake.add_user("alice"), "and me?")

    assert fake.thread_for(from_robot.id) is None
    assert len(tgi.prompts) == 1


@sqlite_only
async def test_without_thread_permission_the_answer_replies_in_the_channel(
    discord_bot: DiscordBot,
) -> None:
    fake = discord_bot.discord
    fake.can_create_threads = False
    question = await fake.say(fake.add_user("alice"), fake.channel_id, "hi", mention_bot=True)

    answer = (await answers(fake, fake.channel_id))[0]

    assert answer.reference_id == question.id
    assert fake.thread_for(question.id) is None


@sqlite_only
async def test_a_model_outage_is_told_in_the_thread(discord_bot: DiscordBot) -> None:
    fake = discord_bot.discord
    await discord_bot.tgi.stop()
    question = await fake.say(fake.add_user("alice"), fake.channel_id, "hi", mention_bot=True)
    thread = await fake.wait_for(lambda: fake.thread_for(question.id))

    notice = await fake.wait_for(
        lambda: [m for m in fake.bot_messages(thread.id) if m.content.startswith("⚠️")]
    )
    assert notice[0].content.startswith(f"⚠️ {BackendUnavailableError.user_message} To retry")
    assert notice[0].custom_ids == [f"kb:regen:{answer_id(notice[0])}"]  # 🔄, nothing to vote on


@sqlite_only
@pytest.mark.parametrize("discord_overrides", [{"rate_limit_per_minute": 1}])
async def test_too_many_messages_get_a_plain_words_notice(discord_bot: DiscordBot) -> None:
    fake = discord_bot.discord
    alice = fake.add_user("alice")
    thread, _ = await ask(discord_bot, alice, "one")

    await fake.say(alice, thread.id, "two")

    notice = await fake.wait_for(lambda: fake.shown(thread.id)[1:])
    expected = RateLimitedError(1, 60).user_message.split(" Please wait")[0]
    assert notice[0].startswith(expected)
