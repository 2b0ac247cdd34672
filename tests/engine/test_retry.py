"""A resend after a failed answer is a retry of it, on SQLite and PostgreSQL: one user row in
the thread, the delivery of the resend claimed (a redelivery is dropped), and only the same
person's own words count."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from koalabot.engine.engine import Engine
from tests.engine.test_engine import THREAD, ThreadView, make_settings, said
from tests.fakes.tgi import FakeTGI, Fault

ASKED_ONCE = "BEGINNING OF CONVERSATION: USER: hello? GPT:"


@pytest.fixture
async def bot(migrated_database_url: str, fake_tgi: FakeTGI) -> AsyncIterator[Engine]:
    async with await Engine.open(make_settings(migrated_database_url, fake_tgi)) as engine:
        yield engine


async def stored_roles(engine: Engine) -> list[tuple[str, str]]:
    conversation_id = await engine.repo.conversation_id(THREAD)
    assert conversation_id is not None
    return [(m.role, m.status) for m in reversed(await engine.repo.history(conversation_id))]


async def test_a_resend_is_stored_once_and_its_redelivery_dropped(
    bot: Engine, fake_tgi: FakeTGI
) -> None:
    fake_tgi.fault = Fault("error", times=1)
    fake_tgi.replies.extend(["He", "Hello!"])
    failed = await bot.handle_message(said("hello?"), ThreadView())
    assert failed.status == "failed" and "send the same message again" in failed.notice

    resend = said("  hello?")
    retried = await bot.handle_message(resend, ThreadView())
    again = await bot.handle_message(resend, ThreadView())  # Slack delivers it twice

    assert (retried.status, retried.text, again.status) == ("ok", "Hello!", "duplicate")
    assert retried.user_message_id == failed.user_message_id
    assert fake_tgi.prompts == [ASKED_ONCE, ASKED_ONCE]
    assert await stored_roles(bot) == [
        ("user", "ok"),
        ("assistant", "failed"),
        ("assistant", "ok"),
    ]


async def test_someone_else_saying_the_same_words_is_a_new_turn(
    bot: Engine, fake_tgi: FakeTGI
) -> None:
    fake_tgi.fault = Fault("error", times=1)
    fake_tgi.replies.extend(["He", "Hello, Bo!"])
    await bot.handle_message(said("hello?", user="U1"), ThreadView())
    other = await bot.handle_message(said("hello?", user="U2"), ThreadView())

    assert other.status == "ok"
    assert fake_tgi.prompts[-1] == "BEGINNING OF CONVERSATION: USER: hello? USER: hello? GPT:"
