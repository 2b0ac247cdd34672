"""A battle thread in the engine: two models answer each message as A and B, one after the other,
both stored with their model; the thread remembers A until people prefer B."""

from __future__ import annotations

import asyncio
import io
from dataclasses import dataclass, field
from typing import Any

import pytest

from koalabot.engine.engine import Engine
from koalabot.engine.notices import NOT_THIS_ANSWER, chose
from koalabot.events import AnswerResult, Clicked, ThreadKey
from koalabot.store.judgements import judgements_on
from koalabot_adapters.terminal import WHICH, TerminalChat
from tests.engine.test_engine import ThreadView, said
from tests.fakes.tgi import FakeTGI
from tests.models.test_engine_models import SERVER_SAYS, _engine, servers


@dataclass
class BattleView(ThreadView):
    """A thread that shows a battle's choice under answer B."""

    choices: dict[str, tuple[int, int]] = field(default_factory=dict)

    async def offer_choice(self, message_id: str, text: str, a_id: int, b_id: int) -> None:
        await self.finish(message_id, text, b_id)
        self.choices[message_id] = (a_id, b_id)


@dataclass
class WatchedView(BattleView):
    """A battle's thread that says when the bot first posts in it."""

    posted: asyncio.Event = field(default_factory=asyncio.Event)

    async def post(self, text: str) -> str:
        self.posted.set()
        return await super().post(text)


@dataclass
class SideBySideView(WatchedView):
    """A thread that shows two answers at once (as Slack and Discord do)."""

    def beside(self) -> SideBySideView:
        return self  # one list of messages: posts, edits and finishes carry their ids


BATTLE = ThreadKey("slack", "T1", "CB", "1700000100.000100")
__all__ = ["servers"]  # the two model servers, as a fixture
SAYS = SERVER_SAYS


async def battle_engine(url: str, servers: dict[str, FakeTGI], **extra: Any) -> Engine:
    return await _engine(url, servers, **{"battle_channels": "CB", **extra})


def sides(result: AnswerResult) -> tuple[AnswerResult, AnswerResult]:
    assert result.status == "ok" and result.rival is not None and result.rival.status == "ok"
    return result, result.rival


async def terminal(engine: Engine) -> tuple[TerminalChat, io.StringIO]:
    """`koalabot chat` on ``engine``, and what it prints."""
    out = io.StringIO()
    chat = TerminalChat(engine, io.StringIO(), out, user="ada")
    await chat.start(interactive=False)
    return chat, out


def model_of(text: str) -> str:
    return next(name for name, reply in SAYS.items() if reply in text)


async def test_a_battle_answers_twice_labelled_stored_with_models_and_b_carries_the_choice(
    migrated_database_url: str, servers: dict[str, FakeTGI]
) -> None:
    engine = await battle_engine(migrated_database_url, servers)
    try:
        view = BattleView()
        a, b = sides(await engine.handle_message(said("Which is better?", BATTLE), view))

        shown_a, shown_b = view.messages[a.message_ids[-1]], view.messages[b.message_ids[-1]]
        assert "*Answer A*" in shown_a and "*Answer B*" in shown_b
        assert shown_a.startswith(a.text) and shown_b.startswith(b.text)
        assert {model_of(a.text), model_of(b.text)} == {"koala", "candidate"}
        stored_a, stored_b = (
            await engine.repo.answer(a.answer_id or 0),
            await engine.repo.answer(b.answer_id or 0),
        )
        assert stored_a and stored_b and stored_a.parent_id == stored_b.parent_id
        assert (stored_a.model, stored_b.model) == (model_of(a.text), model_of(b.text))
        assert view.choices == {b.message_ids[-1]: (a.answer_id, b.answer_id)}
        assert "koala" not in "".join(view.messages.values())  # blind
    finally:
        await engine.close()


@pytest.mark.parametrize("choice", ["a", "b", "tie", None])
async def test_the_thread_continues_with_the_preferred_answer_only(
    migrated_database_url: str, servers: dict[str, FakeTGI], choice: str | None
) -> None:
    engine = await battle_engine(migrated_database_url, servers)
    try:
        a, b = sides(await engine.handle_message(said("First?", BATTLE), ThreadView()))
        if choice is not None:
            assert await engine.judge(a.answer_id or 0, b.answer_id or 0, "U1", choice)
        await engine.handle_message(said("Second?", BATTLE), ThreadView())

        winner, loser = (b, a) if choice == "b" else (a, b)
        for fake in servers.values():
            second = fake.prompts[-1]
            assert "Second?" in second
            assert winner.text in second and loser.text not in second
    finally:
        await engine.close()


@pytest.mark.parametrize("choice", ["a", "b", None])
async def test_a_battle_is_remembered_as_stored_after_the_operator_turns_battles_off(
    migrated_database_url: str, servers: dict[str, FakeTGI], choice: str | None
) -> None:
    """Which answer a battle's thread goes on with is the store's to say, not the settings'."""
    engine = await battle_engine(migrated_database_url, servers)
    try:
        a, b = sides(await engine.handle_message(said("First?", BATTLE), ThreadView()))
        if choice is not None:
            assert await engine.judge(a.answer_id or 0, b.answer_id or 0, "U1", choice)
    finally:
        await engine.close()
    engine = await _engine(migrated_database_url, servers)  # no battle channels any more
    try:
        second = await engine.handle_message(said("Second?", BATTLE), ThreadView())
        assert second.status == "ok" and second.rival is None

        winner, loser = (b, a) if choice == "b" else (a, b)
        prompt = next(f.prompts[-1] for f in servers.values() if "Second?" in f.prompts[-1])
        assert winner.text in prompt and loser.text not in prompt
    finally:
        await engine.close()


async def test_history_names_a_battle_s_answers_a_and_b(
    migrated_database_url: str, servers: dict[str, FakeTGI]
) -> None:
    engine = await battle_engine(migrated_database_url, servers, battle_share=1.0)
    try:
        chat, out = await terminal(engine)
        await chat.handle_line("Which is better?")
        await chat.handle_line("/history")

        history = out.getvalue().rsplit("you: Which is better?", 1)[1].splitlines()
        assert [line.split(":", 1)[0] for line in history if line] == [
            "koala (answer A)",
            "koala (answer B)",
        ]
    finally:
        await engine.close()


@pytest.mark.parametrize("view_type", [WatchedView, SideBySideView])
async def test_a_message_sent_during_a_battle_is_answered_after_both_of_its_answers(
    migrated_database_url: str, servers: dict[str, FakeTGI], view_type: type[WatchedView]
) -> None:
    """A battle is one turn of its thread: the next message never slips in between A and B."""
    for fake in servers.values():
        fake.replies.extend(["Some words to stream slowly here."] * 2)
        fake.token_delay = 0.02
    engine = await battle_engine(migrated_database_url, servers)
    try:
        view = view_type()
        first = asyncio.create_task(engine.handle_message(said("First?", BATTLE), view))
        await view.posted.wait()  # A has started
        second = await engine.handle_message(said("Second?", BATTLE), view)
        first_a, first_b = sides(await first)
        second_a, second_b = sides(second)

        posted = list(view.messages)  # in the order they were posted
        assert [posted.index(r.message_ids[0]) for r in (first_a, first_b, second_a, second_b)] == [
            0,
            1,
            2,
            3,
        ]
    finally:
        await engine.close()


async def test_a_thread_outside_battles_answers_once(
    migrated_database_url: str, servers: dict[str, FakeTGI]
) -> None:
    engine = await battle_engine(migrated_database_url, servers)
    try:
        result = await engine.handle_message(said("Hello?"), ThreadView())
        assert result.status == "ok" and result.rival is None
        assert sum(len(f.prompts) for f in servers.values()) == 1
    finally:
        await engine.close()


async def test_the_terminal_shows_a_then_b_and_takes_the_choice_by_command(
    migrated_database_url: str, servers: dict[str, FakeTGI]
) -> None:
    engine = await battle_engine(migrated_database_url, servers, battle_share=1.0)
    try:
        chat, out = await terminal(engine)
        for line in ("Which is better?", "/b"):
            await chat.handle_line(line)
        assert chat.battle is not None
        a_id, b_id = chat.battle
        await chat.handle_line("Go on.")

        shown = out.getvalue()
        rest = shown.split("*Answer A*", 1)[1]
        assert "*Answer B*" in rest and rest.index("*Answer B*") < rest.index(WHICH)
        assert "[Thanks, I noted your choice: B is better.]" in shown
        a, b = await engine.repo.answer(a_id), await engine.repo.answer(b_id)
        assert a is not None and b is not None and a.model and b.model
        for fake in servers.values():
            prompt = fake.prompts[-1]
            assert SAYS[b.model] in prompt and SAYS[a.model] not in prompt
    finally:
        await engine.close()


async def test_a_choice_counts_only_from_a_message_showing_the_battle_and_for_people_let_in(
    migrated_database_url: str, servers: dict[str, FakeTGI]
) -> None:
    engine = await battle_engine(migrated_database_url, servers, blocked_users="U0MALLORY")
    try:
        a, b = sides(await engine.handle_message(said("Which?", BATTLE), BattleView()))
        a_id, b_id = a.answer_id or 0, b.answer_id or 0
        elsewhere = Clicked(BATTLE.channel, "1700000999.000100")
        on_a, on_b = (
            Clicked(BATTLE.channel, a.message_ids[-1]),
            Clicked(BATTLE.channel, b.message_ids[-1]),
        )

        assert await engine.choose(a_id, b_id, "U1", "a", elsewhere) == NOT_THIS_ANSWER
        assert await engine.choose(a_id, b_id, "U0MALLORY", "a", on_b) != chose("a")
        assert await engine.choose(a_id, b_id, "U1", "tie", on_b) == chose("tie")
        assert await engine.choose(a_id, b_id, "U2", "both_bad", on_a) == chose("both_bad")
        judged = await judgements_on(engine.db, [a_id])
        assert [(j.user, j.choice) for j in judged] == [("U1", "tie"), ("U2", "both_bad")]
    finally:
        await engine.close()
