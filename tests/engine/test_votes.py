"""koalabot.engine.votes and the vote acknowledgements of koalabot.engine.notices: a vote counts
only where its answer was shown, and the voter is told in a few words what became of it.

Votes through the Engine on a real SQLite store and the fake TGI (the latest-vote-wins rules are
in test_engine.py, kept votes in test_backlog.py)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from koalabot.config import load_settings
from koalabot.engine.engine import Engine
from koalabot.engine.notices import NOT_THIS_ANSWER, discord_vote_reply, slack_vote_words
from koalabot.errors import AccessDeniedError
from koalabot.events import (
    AnswerResult,
    ChatMessage,
    Clicked,
    FeedbackEvent,
    FeedbackResult,
    ThreadKey,
)
from tests.fakes.tgi import FakeTGI, Fault
from tests.reliability.sinks import Recorder

THREAD = ThreadKey("slack", "T1", "C1", "1.0")
BOBS = ThreadKey("slack", "T1", "C2", "2.0")


@pytest.fixture
async def engine(sqlite_url: str, fake_tgi: FakeTGI) -> AsyncIterator[Engine]:
    settings = load_settings(None, database_url=sqlite_url, tgi_url=fake_tgi.url, notice="")
    async with await Engine.open(settings) as opened:
        yield opened


async def test_a_vote_from_another_platform_never_counts(engine: Engine) -> None:
    answered = await engine.handle_message(ChatMessage(THREAD, "U1", "hi", "1.1"), Recorder())
    assert answered.answer_id is not None
    # Discord user ids are not Slack's: an answer id carried over must not let one vote.
    vote = FeedbackEvent("discord", "U1", 1, answer_id=answered.answer_id)
    result = await engine.handle_feedback(vote)
    assert not result.recorded and result.reason == "not an answer"
    assert await engine.repo.votes(answered.answer_id) == {}


async def test_a_reaction_on_any_part_of_a_long_answer_counts_on_that_answer(
    engine: Engine, fake_tgi: FakeTGI
) -> None:
    fake_tgi.replies.append(" " + "\n\n".join(f"Paragraph {n} of a long answer." for n in range(6)))
    sink = Recorder(max_chars=80)
    answered = await engine.handle_message(ChatMessage(THREAD, "U1", "tell me", "1.1"), sink)
    parts = list(sink.shown)
    assert answered.status == "ok" and len(parts) > 1
    vote = FeedbackEvent("slack", "U2", -1, channel="C1", platform_message_id=parts[-1])
    result = await engine.handle_feedback(vote)
    assert result.recorded and result.answer_id == answered.answer_id
    assert result.where == THREAD  # so the acknowledgement shows in the answer's thread
    assert await engine.repo.votes(answered.answer_id) == {"U2": -1}


async def two_answers(engine: Engine) -> tuple[AnswerResult, AnswerResult]:
    """Alice's answer in C1 and Bob's in C2, each the first message of its own channel."""
    alices = await engine.handle_message(
        ChatMessage(THREAD, "UALICE", "my secret", "1.1"), Recorder()
    )
    bobs = await engine.handle_message(ChatMessage(BOBS, "UBOB", "bob's secret", "2.1"), Recorder())
    assert alices.answer_id is not None and bobs.answer_id is not None
    return alices, bobs


def click(user: str, rating: int, answer_id: int | None, on: Clicked) -> FeedbackEvent:
    return FeedbackEvent(
        "slack", user, rating, answer_id, channel=on.channel, platform_message_id=on.message_id
    )


async def test_a_button_naming_another_answer_than_its_message_shows_changes_nothing(
    engine: Engine, fake_tgi: FakeTGI
) -> None:
    alices, bobs = await two_answers(engine)
    on_alices = Clicked("C1", alices.message_ids[-1])
    # An old button under Alice's answer whose id now names Bob's answer (or a forged click).
    vote = await engine.handle_feedback(click("UALICE", -1, bobs.answer_id, on_alices))
    assert not vote.recorded and vote.notice == NOT_THIS_ANSWER and vote.where is None
    assert slack_vote_words(vote) == discord_vote_reply(vote) == NOT_THIS_ANSWER
    assert await engine.repo.votes(bobs.answer_id or 0) == {}
    # The same id from the same ts in another channel is not Bob's message either.
    elsewhere = Clicked("C3", bobs.message_ids[-1])
    assert not (
        await engine.handle_feedback(click("UALICE", 1, bobs.answer_id, elsewhere))
    ).recorded

    sink = Recorder()
    again = await engine.regenerate(bobs.answer_id or 0, "UALICE", sink, on_alices)
    assert again.status == "not_this_answer" and again.notice == NOT_THIS_ANSWER
    assert sink.shown == {} and sink.notices == []  # the refusal is the adapter's to show privately
    assert len(fake_tgi.prompts) == 2 and "bob's secret" not in fake_tgi.prompts[0]
    # The button on Bob's own message still works.
    on_bobs = Clicked("C2", bobs.message_ids[-1])
    assert (await engine.handle_feedback(click("UBOB", 1, bobs.answer_id, on_bobs))).recorded
    assert (
        await engine.regenerate(bobs.answer_id or 0, "UBOB", Recorder(), on_bobs)
    ).status == "ok"


async def test_a_failure_notice_is_the_message_of_its_answer(
    engine: Engine, fake_tgi: FakeTGI
) -> None:
    fake_tgi.fault = Fault("error", after_tokens=1)
    sink = Recorder()
    failed = await engine.handle_message(ChatMessage(THREAD, "U1", "hi", "1.1"), sink)
    assert failed.status == "failed" and failed.answer_id is not None
    # 🔄 under the notice (the placeholder the answer was posted as) answers again.
    again = await engine.regenerate(failed.answer_id, "U1", Recorder(), Clicked("C1", "m0"))
    assert again.status == "ok"


@contextlib.asynccontextmanager
async def answered_with(
    sqlite_url: str, tgi: FakeTGI, **settings: Any
) -> AsyncIterator[tuple[Engine, AnswerResult, Clicked]]:
    """An Engine with ``settings``, U1's answered question, and the message it shows as."""
    values = load_settings(None, database_url=sqlite_url, tgi_url=tgi.url, notice="", **settings)
    async with await Engine.open(values) as engine:
        answered = await engine.handle_message(ChatMessage(THREAD, "U1", "hi", "1.1"), Recorder())
        yield engine, answered, Clicked("C1", answered.message_ids[-1])


async def test_a_blocked_persons_vote_is_not_recorded(sqlite_url: str, fake_tgi: FakeTGI) -> None:
    async with answered_with(sqlite_url, fake_tgi, blocked_users="UBAD") as (
        engine,
        answered,
        on_it,
    ):
        button = await engine.handle_feedback(click("UBAD", 1, answered.answer_id, on_it))
        reaction = await engine.handle_feedback(click("UBAD", -1, None, on_it))
        assert await engine.repo.votes(answered.answer_id or 0) == {}
    assert not button.recorded and button.notice == AccessDeniedError.user_message
    assert not reaction.recorded and reaction.reason == "denied"


async def test_a_burst_of_votes_is_limited_like_messages_but_apart_from_them(
    sqlite_url: str, fake_tgi: FakeTGI
) -> None:
    async with answered_with(sqlite_url, fake_tgi, rate_limit_per_minute=3) as (
        engine,
        answered,
        on_it,
    ):
        burst = [
            await engine.handle_feedback(click("U1", rating, answered.answer_id, on_it))
            for rating in (1, -1, 1, -1, 1)
        ]
        votes = await engine.repo.votes(answered.answer_id or 0)
        # Voting took none of the messages' minute: two more questions are still answered.
        more = [
            await engine.handle_message(
                ChatMessage(THREAD, "U1", f"q{n}", f"1.{n + 2}"), Recorder()
            )
            for n in range(2)
        ]
    assert [r.recorded for r in burst] == [True, True, True, False, False]
    assert "voting faster" in burst[-1].notice and "3 a minute" in burst[-1].notice
    assert votes == {"U1": 1}  # the third vote, the last one let through
    assert [m.status for m in more] == ["ok", "ok"]


async def test_a_burst_of_regenerations_is_limited_like_messages(
    sqlite_url: str, fake_tgi: FakeTGI
) -> None:
    async with answered_with(sqlite_url, fake_tgi, rate_limit_per_minute=2) as (
        engine,
        answered,
        on_it,
    ):
        burst = [
            await engine.regenerate(answered.answer_id or 0, "U1", Recorder(), on_it)
            for _ in range(3)
        ]
    assert [r.status for r in burst] == ["ok", "denied", "denied"]
    assert "faster than I can keep up" in burst[-1].notice
    assert len(fake_tgi.prompts) == 2


KEPT_UP = FeedbackResult(False, 7, 1, "kept until the database is back", kept=True)
KEPT_REMOVAL = FeedbackResult(False, 7, 0, "kept until the database is back", kept=True)
FAILED = FeedbackResult(False, reason="store unavailable")
NOT_AN_ANSWER = FeedbackResult(False, reason="not an answer")


@pytest.mark.parametrize(
    ("result", "words"),
    [
        (FeedbackResult(True, 7, 1), "Thanks! I noted your 👍 on this answer."),
        (
            FeedbackResult(True, 7, -1),
            "Thanks! I noted your 👎 on this answer — it helps make me better.",
        ),
        (FeedbackResult(True, 7, 0, "removed"), "Your vote on this answer is removed."),
        (
            KEPT_UP,
            "Thanks! My database is away for a moment: I'll record your 👍 as soon as it is back.",
        ),
        (
            KEPT_REMOVAL,
            "Thanks! My database is away for a moment: I'll remove your vote as soon as it is "
            "back.",
        ),
        (FAILED, "Sorry, I could not record that vote."),
    ],
)
def test_slack_tells_the_voter_what_became_of_the_vote(result: FeedbackResult, words: str) -> None:
    assert slack_vote_words(result) == words


@pytest.mark.parametrize(
    ("result", "words"),
    [
        (FeedbackResult(True, 7, 1), "Thanks, I noted your 👍."),
        (FeedbackResult(True, 7, -1), "Thanks, I noted your 👎."),
        (
            KEPT_UP,
            "Thanks! My database is away for a moment: I'll record your 👍 as soon as it is back.",
        ),
        (
            KEPT_REMOVAL,
            "My database is away for a moment: I'll remove your vote as soon as it is back.",
        ),
        (FAILED, "I could not save your vote just now. Please try again in a moment."),
        (
            NOT_AN_ANSWER,
            "I could not find that answer any more, so the vote was not recorded.",
        ),
    ],
)
def test_discord_tells_the_voter_what_became_of_the_vote(
    result: FeedbackResult, words: str
) -> None:
    assert discord_vote_reply(result) == words
