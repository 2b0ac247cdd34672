"""A failed answer in Discord is retried in place: 🔄 under the failure notice, or the same
words sent again in the thread (issue 19, item 1). The real client against the fake Discord
and TGI."""

from __future__ import annotations

import pytest

from tests.fakes.discord import FakeChannel, FakeDiscord, FakeMessage, FakeUser
from tests.fakes.tgi import Fault
from tests.fixtures.discord import DiscordBot

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
ASKED_ONCE = "BEGINNING OF CONVERSATION: USER: are you there? GPT:"


async def failed_question(bot: DiscordBot, alice: FakeUser) -> tuple[FakeChannel, FakeMessage]:
    """Ask while the model fails: the thread, and the notice the placeholder turned into."""
    fake = bot.discord
    question = await fake.say(alice, fake.channel_id, "are you there?", mention_bot=True)
    thread = await fake.wait_for(lambda: fake.thread_for(question.id))
    notices = await fake.wait_for(
        lambda: [m for m in fake.bot_messages(thread.id) if m.content.startswith("⚠️")]
    )
    assert await bot.adapter.drain(10)
    return thread, notices[0]


async def voted_answer(fake: FakeDiscord, thread: FakeChannel) -> FakeMessage:
    """The finished answer (👍 👎 🔄 under it) in the thread."""
    return await fake.wait_for(
        lambda: next((m for m in fake.bot_messages(thread.id) if len(m.custom_ids) == 3), None)
    )


async def test_retry_button_under_the_failure_notice_answers_the_question(
    discord_bot: DiscordBot,
) -> None:
    fake, tgi = discord_bot.discord, discord_bot.tgi
    alice = fake.add_user("alice")
    await tgi.stop()
    thread, notice = await failed_question(discord_bot, alice)
    assert "🔄" in notice.content and "same message again" in notice.content
    (retry,) = notice.custom_ids
    assert retry.startswith("kb:regen:")

    await tgi.start()
    tgi.replies.append("Yes, I am here.")
    click = await fake.click(alice, notice.id, retry)
    answer = await voted_answer(fake, thread)

    assert click.callbacks == [{"type": 6}]
    assert answer.content == "Yes, I am here."
    assert tgi.prompts == [ASKED_ONCE]


async def test_the_same_words_again_in_the_thread_are_a_retry_not_a_second_turn(
    discord_bot: DiscordBot,
) -> None:
    fake, tgi = discord_bot.discord, discord_bot.tgi
    alice = fake.add_user("alice")
    tgi.fault = Fault("error", times=1)
    tgi.replies.extend(["Ye", "Yes, I am here."])  # the first goes to the failed answer
    thread, _ = await failed_question(discord_bot, alice)

    await fake.say(alice, thread.id, "are you there?")
    answer = await voted_answer(fake, thread)

    assert answer.content == "Yes, I am here."
    assert tgi.prompts == [ASKED_ONCE, ASKED_ONCE]
