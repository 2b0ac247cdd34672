"""The engine end to end: real store (SQLite and PostgreSQL), the fake TGI over a socket."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from koalabot.config import load_settings
from koalabot.engine.engine import Engine
from koalabot.events import ChatMessage, Clicked, FeedbackEvent, ThreadKey
from tests.fakes.tgi import FakeTGI, Fault

THREAD = ThreadKey("slack", "T1", "C1", "1700000000.000100")


@dataclass
class ThreadView:
    """What a person in the thread sees: messages by id, notices, and the answer controls."""

    max_chars: int = 3000
    edit_interval: float = 0.01
    messages: dict[str, str] = field(default_factory=dict)
    notices: list[str] = field(default_factory=list)
    buttons: dict[str, int] = field(default_factory=dict)
    thinking_calls: list[bool] = field(default_factory=list)

    async def post(self, text: str) -> str:
        message_id = f"m{len(self.messages) + 1}"
        self.messages[message_id] = text
        return message_id

    async def edit(self, message_id: str, text: str) -> None:
        self.messages[message_id] = text

    async def finish(self, message_id: str, text: str, answer_id: int) -> None:
        self.messages[message_id] = text
        self.buttons[message_id] = answer_id

    async def notice(self, text: str) -> None:
        self.notices.append(text)

    async def thinking(self, on: bool) -> None:
        self.thinking_calls.append(on)

    @property
    def last(self) -> str:
        return list(self.messages.values())[-1]


def make_settings(database_url: str, tgi: FakeTGI, **extra: Any) -> Any:
    values: dict[str, Any] = {
        "database_url": database_url,
        "tgi_url": tgi.url,
        "first_token_timeout": 2.0,
        "idle_timeout": 1.0,
        "retries": 2,
        "retry_base_delay": 0.01,
        "health_check_interval": 0.05,
        "edit_interval": 0.01,
        "notice": "NOTICE: research model; votes may become training data.",
    }
    values.update(extra)
    return load_settings(None, **values)


@pytest.fixture
async def engine(migrated_database_url: str, fake_tgi: FakeTGI) -> AsyncIterator[Engine]:
    eng = await Engine.open(make_settings(migrated_database_url, fake_tgi))
    try:
        yield eng
    finally:
        await eng.close()


_seq = iter(range(1, 1_000_000))


def said(
    text: str, where: ThreadKey = THREAD, user: str = "U1", ts: str | None = None
) -> ChatMessage:
    ts = ts or f"1700000000.{next(_seq):06d}"
    return ChatMessage(
        where, user, text, ts, dedupe_keys=(f"{where.platform}:msg:{where.channel}:{ts}",)
    )


async def test_answer_is_streamed_stored_and_carries_the_first_notice(
    engine: Engine, fake_tgi: FakeTGI
) -> None:
    fake_tgi.replies.append(" The blue whale is the largest animal on earth.")
    view = ThreadView()
    result = await engine.handle_message(said("What is the largest animal on earth?"), view)
    assert result.status == "ok"
    assert result.text == "The blue whale is the largest animal on earth."
    assert view.last.startswith("The blue whale is the largest animal on earth.")
    assert "NOTICE: research model" in view.last
    assert view.buttons == {"m1": result.answer_id}
    assert fake_tgi.prompts[-1] == (
        "BEGINNING OF CONVERSATION: USER: What is the largest animal on earth? GPT:"
    )
    # the second answer in the thread goes without the notice, and remembers the first turn
    fake_tgi.replies.append(" About 30 metres.")
    view2 = ThreadView()
    second = await engine.handle_message(said("How long is it?"), view2)
    assert second.status == "ok"
    assert "NOTICE" not in view2.last
    assert fake_tgi.prompts[-1] == (
        "BEGINNING OF CONVERSATION: USER: What is the largest animal on earth? "
        "GPT:The blue whale is the largest animal on earth.</s>USER: How long is it? GPT:"
    )
    assert await engine.knows_thread(THREAD)
    assert not await engine.knows_thread(ThreadKey("slack", "T1", "C1", "other"))


async def test_generation_record_keeps_the_exact_prompt(engine: Engine, fake_tgi: FakeTGI) -> None:
    fake_tgi.replies.append(" Hi! How can I help you?")
    result = await engine.handle_message(said("Hello!"), ThreadView())
    record = await generation_of(engine, result.answer_id)
    assert record["prompt"] == "BEGINNING OF CONVERSATION: USER: Hello! GPT:"
    assert record["template"] == "koala"
    assert record["model_id"] == fake_tgi.model_id
    assert record["endpoint"] == fake_tgi.url
    assert record["finish_reason"] == "eos_token"
    assert record["completion_tokens"] and record["completion_tokens"] > 0
    assert record["prompt_tokens"] and record["prompt_tokens"] > 0
    assert record["time_to_first_token"] is not None and record["total_time"] is not None
    assert record["parameters"]["max_new_tokens"] == engine.settings.max_new_tokens


async def test_duplicate_delivery_is_answered_once(engine: Engine, fake_tgi: FakeTGI) -> None:
    fake_tgi.token_delay = 0.01
    msg = said("Tell me about koalas.")
    views = [ThreadView(), ThreadView(), ThreadView()]
    results = await asyncio.gather(*(engine.handle_message(msg, v) for v in views))
    statuses = sorted(r.status for r in results)
    assert statuses == ["duplicate", "duplicate", "ok"]
    assert len(fake_tgi.prompts) == 1
    assert sum(len(v.messages) for v in views) == 1
    # a later retry of the same delivery, after the answer, is dropped too
    assert (await engine.handle_message(msg, ThreadView())).status == "duplicate"


async def test_two_messages_at_once_in_one_thread_are_answered_in_order(
    engine: Engine, fake_tgi: FakeTGI
) -> None:
    fake_tgi.token_delay = 0.005
    fake_tgi.replies.extend([" First answer.", " Second answer."])
    first, second = said("first question"), said("second question")
    view1, view2 = ThreadView(), ThreadView()
    task1 = asyncio.create_task(engine.handle_message(first, view1))
    await asyncio.sleep(0)  # the first is delivered a moment before the second
    task2 = asyncio.create_task(engine.handle_message(second, view2))
    r1, r2 = await asyncio.gather(task1, task2)
    assert (r1.text, r2.text) == ("First answer.", "Second answer.")
    # the second answer saw the first exchange complete: never interleaved
    assert fake_tgi.prompts[1].endswith(
        "USER: first question GPT:First answer.</s>USER: second question GPT:"
    )


@pytest.mark.parametrize(
    ("fault", "expected_words"),
    [
        (None, "not reachable"),  # the server is down: connections refused
        (Fault("overloaded", times=None), "busy"),
        (Fault("stall", after_tokens=2), "took too long"),
        (Fault("error", after_tokens=2), "stopped in the middle"),
        (Fault("disconnect", after_tokens=2), "stopped in the middle"),
        (Fault("html502", times=None), "not reachable"),
    ],
    ids=["refused", "overloaded", "stall", "error-mid-stream", "disconnect", "html502"],
)
async def test_backend_faults_keep_the_message_notify_and_recover(
    engine: Engine, fake_tgi: FakeTGI, fault: Fault | None, expected_words: str
) -> None:
    fake_tgi.replies.append(" one two three four five six seven")
    if fault is None:
        await fake_tgi.stop()
    fake_tgi.fault = fault
    view = ThreadView()
    result = await engine.handle_message(said("Will this work?"), view)
    if fault is None:
        await fake_tgi.start()  # the same port: the operator started the server again
    assert result.status == "failed"
    assert expected_words in view.last, view.messages
    stored = await thread_rows(engine)
    assert ("user", "Will this work?", "ok") in stored
    assert any(role == "assistant" and status == "failed" for role, _, status in stored)
    if fault is not None and fault.after_tokens:
        # the partial answer is kept in the store and shown above the notice
        assert any(role == "assistant" and text.startswith("one") for role, text, _ in stored), (
            stored
        )
        assert view.last.startswith("one")
    # the next message in the thread works
    fake_tgi.fault = None
    fake_tgi.replies.clear()
    fake_tgi.replies.append(" Yes, now it works.")
    again = await engine.handle_message(said("And now?"), ThreadView())
    assert again.status == "ok", again
    # the failed partial answer is not presented to the model as something it said
    assert "one two" not in fake_tgi.prompts[-1]


async def test_restart_keeps_the_memory(migrated_database_url: str, fake_tgi: FakeTGI) -> None:
    settings = make_settings(migrated_database_url, fake_tgi)
    fake_tgi.replies.append(" Your name is Ada.")
    async with await Engine.open(settings) as first:
        await first.handle_message(said("My name is Ada. What is my name?"), ThreadView())
    fake_tgi.replies.append(" Still Ada.")
    async with await Engine.open(settings) as second:
        result = await second.handle_message(said("What is my name again?"), ThreadView())
    assert result.status == "ok"
    assert (
        "USER: My name is Ada. What is my name? GPT:Your name is Ada.</s>" in fake_tgi.prompts[-1]
    )


async def test_votes_latest_wins_removal_deletes_and_unknown_is_ignored(
    engine: Engine, fake_tgi: FakeTGI
) -> None:
    view = ThreadView()
    result = await engine.handle_message(said("Rate me"), view)
    answer = result.answer_id
    assert answer is not None
    shown = result.message_ids[-1]  # the button is on the answer's last message
    up = await engine.handle_feedback(
        FeedbackEvent("slack", "U2", 1, answer_id=answer, channel="C1", platform_message_id=shown)
    )
    assert up.recorded and up.rating == 1
    # a reaction on the posted message finds the same answer; the latest vote wins
    down = await engine.handle_feedback(
        FeedbackEvent("slack", "U2", -1, channel="C1", platform_message_id="m1")
    )
    assert down.recorded and down.answer_id == answer
    assert await engine.repo.votes(answer) == {"U2": -1}
    # removing the old 👍 reaction does not delete the newer 👎
    await engine.handle_feedback(
        FeedbackEvent("slack", "U2", 1, channel="C1", platform_message_id="m1", removed=True)
    )
    assert await engine.repo.votes(answer) == {"U2": -1}
    await engine.handle_feedback(
        FeedbackEvent("slack", "U2", -1, channel="C1", platform_message_id="m1", removed=True)
    )
    assert await engine.repo.votes(answer) == {}
    # votes on a user's message, an unknown message, or by a bot are ignored
    assert not (
        await engine.handle_feedback(
            FeedbackEvent("slack", "U2", 1, answer_id=result.user_message_id)
        )
    ).recorded
    assert not (
        await engine.handle_feedback(
            FeedbackEvent("slack", "U2", 1, channel="C1", platform_message_id="nope")
        )
    ).recorded
    assert not (
        await engine.handle_feedback(FeedbackEvent("slack", "B1", 1, answer_id=answer, is_bot=True))
    ).recorded


async def test_regenerate_makes_a_sibling_answer(engine: Engine, fake_tgi: FakeTGI) -> None:
    fake_tgi.replies.extend([" First try.", " Second try."])
    first = await engine.handle_message(said("Give me a title"), ThreadView())
    clicked = Clicked("C1", first.message_ids[-1])
    again = await engine.regenerate(first.answer_id or 0, "U1", ThreadView(), clicked)
    assert again.status == "ok" and again.text == "Second try."
    assert again.user_message_id == first.user_message_id
    assert again.answer_id != first.answer_id
    # the regenerated answer was asked with the same prompt (the sibling is not in it)
    assert fake_tgi.prompts[-1] == fake_tgi.prompts[-2]


async def test_access_policy_and_rate_limit(migrated_database_url: str, fake_tgi: FakeTGI) -> None:
    settings = make_settings(
        migrated_database_url,
        fake_tgi,
        blocked_users="slack:UBAD",
        allowed_channels="C1",
        rate_limit_per_minute=2,
    )
    async with await Engine.open(settings) as engine:
        view = ThreadView()
        denied = await engine.handle_message(said("hi", user="UBAD"), view)
        assert denied.status == "denied" and "not available" in view.notices[-1]
        other = ThreadKey("slack", "T1", "C9", "1.0")
        assert (await engine.handle_message(said("hi", where=other), ThreadView())).status == (
            "denied"
        )
        assert not fake_tgi.prompts
        for _ in range(2):
            assert (await engine.handle_message(said("hi"), ThreadView())).status == "ok"
        view = ThreadView()
        limited = await engine.handle_message(said("one more"), view)
        assert limited.status == "rate_limited"
        assert "limit: 2 a minute" in view.notices[-1]
        assert len(fake_tgi.prompts) == 2
        # the rate-limited message is still in the thread's memory
        assert ("user", "one more", "ok") in await thread_rows(engine)


async def test_too_long_message_is_stored_and_explained(
    migrated_database_url: str, fake_tgi: FakeTGI
) -> None:
    fake_tgi.max_input_tokens = 300
    fake_tgi.max_total_tokens = 400
    settings = make_settings(migrated_database_url, fake_tgi, max_new_tokens=100)
    async with await Engine.open(settings) as engine:
        view = ThreadView()
        result = await engine.handle_message(said("word " * 2000), view)
        assert result.status == "too_long"
        assert "too long" in view.last and "300" in view.last
        assert not fake_tgi.prompts
        assert ("user", ("word " * 2000), "ok") in await thread_rows(engine)


async def test_long_thread_drops_oldest_turns_and_says_so(
    migrated_database_url: str, fake_tgi: FakeTGI
) -> None:
    fake_tgi.max_input_tokens = 120
    fake_tgi.max_total_tokens = 160
    settings = make_settings(migrated_database_url, fake_tgi, max_new_tokens=30)
    async with await Engine.open(settings) as engine:
        for i in range(8):
            fake_tgi.replies.append(f" Answer number {i} is here.")
            view = ThreadView()
            result = await engine.handle_message(said(f"question number {i} please"), view)
            assert result.status == "ok", result
        assert result.dropped_turns > 0
        assert "no longer see" in view.last
        prompt = fake_tgi.prompts[-1]
        assert prompt.startswith("BEGINNING OF CONVERSATION: USER: ")
        assert prompt.endswith("USER: question number 7 please GPT:")
        assert "question number 0 " not in prompt


async def test_empty_and_attachment_only_messages_get_a_clear_answer(
    engine: Engine, fake_tgi: FakeTGI
) -> None:
    view = ThreadView()
    result = await engine.handle_message(said("   "), view)
    assert result.status == "empty" and "only read text" in view.notices[-1]
    msg = ChatMessage(THREAD, "U1", "", "1700000001.000001", attachments=1)
    await engine.handle_message(msg, view)
    assert "attachments" in view.notices[-1]
    assert not fake_tgi.prompts


async def test_opt_out_is_remembered(engine: Engine) -> None:
    await engine.opt_out("terminal", "ada")
    assert await engine.repo.is_opted_out("terminal:ada")
    assert not await engine.repo.is_opted_out("terminal:bob")


# --- reading the store back (through the repository's public functions) -------------------


async def thread_rows(engine: Engine) -> list[tuple[str, str, str]]:
    conversation = await engine.repo.conversation_id(THREAD)
    assert conversation is not None
    page = await engine.repo.history(conversation, limit=1000)
    return [(m.role, m.text, m.status) for m in reversed(page)]


async def generation_of(engine: Engine, answer_id: int | None) -> dict[str, Any]:
    assert answer_id is not None
    record = await engine.repo.generation(answer_id)
    assert record is not None
    return dict(record.__dict__)
