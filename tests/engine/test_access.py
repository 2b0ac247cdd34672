"""koalabot.engine.access: who may use the bot and how fast, checked before the model is asked.

Through the Engine on a real SQLite store and the fake TGI where the store matters (a person
kept out leaves nothing behind; a person slowed down keeps their message), and through
AccessPolicy with a clock of the test's own where only time matters.
"""

from __future__ import annotations

from typing import Any

import pytest

from koalabot.config import load_settings
from koalabot.engine.access import AccessPolicy
from koalabot.engine.engine import Engine
from koalabot.errors import AccessDeniedError, RateLimitedError
from koalabot.events import ChatMessage, Clicked, ThreadKey
from tests.fakes.tgi import FakeTGI
from tests.reliability.sinks import Recorder

THREAD = ThreadKey("slack", "T1", "C1", "1.0")
DM = ThreadKey("slack", "", "D1", "1.0")
DENIED = AccessDeniedError.user_message


def said(text: str, ts: str, where: ThreadKey = THREAD, user: str = "U1") -> ChatMessage:
    return ChatMessage(where, user, text, ts, (f"{where.platform}:{where.channel}:{ts}",))


def policy(clock: list[float] | None = None, **settings: Any) -> AccessPolicy:
    values = load_settings(None, **settings)
    if clock is None:
        return AccessPolicy(values)
    return AccessPolicy(values, clock=lambda: clock[0])


async def open_engine(sqlite_url: str, tgi: FakeTGI, **settings: Any) -> Engine:
    return await Engine.open(
        load_settings(None, database_url=sqlite_url, tgi_url=tgi.url, notice="", **settings)
    )


async def test_a_person_kept_out_is_told_and_leaves_nothing_behind(
    sqlite_url: str, fake_tgi: FakeTGI
) -> None:
    engine = await open_engine(sqlite_url, fake_tgi, blocked_users="slack:UBAD")
    sink = Recorder()
    try:
        result = await engine.handle_message(said("let me in", "1.1", user="UBAD"), sink)
        remembered = await engine.transcript(THREAD)
        knows = await engine.knows_thread(THREAD)
    finally:
        await engine.close()
    assert result.status == "denied" and sink.notices == [DENIED]
    assert remembered == [] and not knows  # not even a conversation row
    assert fake_tgi.prompts == []


async def test_a_person_slowed_down_keeps_their_message_in_the_thread(
    sqlite_url: str, fake_tgi: FakeTGI
) -> None:
    engine = await open_engine(sqlite_url, fake_tgi, rate_limit_per_minute=1)
    sink = Recorder()
    try:
        first = await engine.handle_message(said("one", "1.1"), sink)
        second = await engine.handle_message(said("two", "1.2"), sink)
        fake_tgi.replies.append(" Both, then.")
        other = await engine.handle_message(said("three", "1.3", user="U2"), Recorder())
        remembered = [(t.role, t.content) for t in await engine.transcript(THREAD)]
    finally:
        await engine.close()
    assert (first.status, second.status, other.status) == ("ok", "rate_limited", "ok")
    assert "limit: 1 a minute" in sink.notices[-1]
    # The slowed-down message stays part of the thread: the next answer sees it.
    assert fake_tgi.prompts[-1].endswith("USER: two USER: three GPT:")
    assert ("user", "two") in remembered


async def test_a_blocked_person_cannot_regenerate_an_answer(
    sqlite_url: str, fake_tgi: FakeTGI
) -> None:
    engine = await open_engine(sqlite_url, fake_tgi, blocked_users="UBAD")
    try:
        answered = await engine.handle_message(said("hello", "1.1"), Recorder())
        assert answered.answer_id is not None
        sink = Recorder()
        clicked = Clicked("C1", answered.message_ids[-1])
        again = await engine.regenerate(answered.answer_id, "UBAD", sink, clicked)
    finally:
        await engine.close()
    assert again.status == "denied" and sink.notices == [DENIED]
    assert len(fake_tgi.prompts) == 1


def test_an_allowed_user_is_named_by_id_on_any_platform_or_with_its_platform() -> None:
    discord = ThreadKey("discord", "G1", "C1", "1")
    bare, scoped = policy(allowed_users="U1"), policy(allowed_users="slack:U1")
    for allowed in (bare, scoped):
        allowed.check_allowed(said("hi", "1.1"))
        with pytest.raises(AccessDeniedError):
            allowed.check_allowed(said("hi", "1.2", user="U2"))
    bare.check_allowed(said("hi", "1.3", where=discord))
    with pytest.raises(AccessDeniedError):  # on Discord, slack:U1 is someone else
        scoped.check_allowed(said("hi", "1.3", where=discord))


def test_a_workspace_allow_list_keeps_other_workspaces_out_but_not_direct_messages() -> None:
    allowed = policy(allowed_workspaces="T1")
    allowed.check_allowed(said("hi", "1.1"))
    allowed.check_allowed(said("hi", "1.2", where=DM))
    with pytest.raises(AccessDeniedError):
        allowed.check_allowed(said("hi", "1.3", where=ThreadKey("slack", "T9", "C1", "1.0")))


def test_a_channel_allow_list_and_a_block_list_both_hold() -> None:
    allowed = policy(allowed_channels="C1", blocked_users="slack:UBAD")
    allowed.check_allowed(said("hi", "1.1"))
    with pytest.raises(AccessDeniedError):
        allowed.check_allowed(said("hi", "1.2", where=ThreadKey("slack", "T1", "C2", "1.0")))
    with pytest.raises(AccessDeniedError):  # blocked even where the channel is allowed
        allowed.check_allowed(said("hi", "1.3", user="UBAD"))


def test_the_rate_limit_is_per_person_and_a_minute_slides() -> None:
    now = [1000.0]
    limited = policy(now, rate_limit_per_minute=2)
    limited.check_rate("slack", "U1")
    now[0] += 20
    limited.check_rate("slack", "U1")
    with pytest.raises(RateLimitedError) as caught:
        limited.check_rate("slack", "U1")
    assert caught.value.retry_after == pytest.approx(40.0)  # the first one leaves the minute
    limited.check_rate("slack", "U2")  # someone else is not slowed down
    limited.check_rate("discord", "U1")  # nor is the same id on another platform
    now[0] += 40
    limited.check_rate("slack", "U1")  # a minute after the first: room for one more
    with pytest.raises(RateLimitedError):
        limited.check_rate("slack", "U1")


def test_a_limit_of_zero_means_no_limit() -> None:
    now = [0.0]
    unlimited = policy(now, rate_limit_per_minute=0)
    for _ in range(1000):
        unlimited.check_rate("slack", "U1")
