"""Battles export as `dpo` rows with the human choice: the chosen answer is the side most people
preferred; ties, both-bad and even splits give no row, and an opted-out person's choice does
not count."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from koalabot.engine.engine import Engine
from koalabot.events import AnswerResult, FeedbackEvent, ThreadKey
from koalabot.export.options import ExportOptions, Format
from koalabot.export.run import export
from tests.engine.test_engine import ThreadView, said
from tests.fakes.tgi import FakeTGI
from tests.models.test_battle_threads import battle_engine, sides
from tests.models.test_engine_models import servers

__all__ = ["servers"]  # the two model servers, as a fixture
pytestmark = pytest.mark.compiled_build


def battle_thread(n: int) -> ThreadKey:
    return ThreadKey("slack", "T1", "CB", f"1700000{n:03d}.000200")


async def fight(engine: Engine, n: int, question: str) -> tuple[int, int, str, str]:
    """One battle in a thread of its own: A's and B's ids and texts."""
    a, b = sides(await engine.handle_message(said(question, battle_thread(n)), ThreadView()))
    assert a.answer_id is not None and b.answer_id is not None
    return a.answer_id, b.answer_id, a.text, b.text


async def dpo_rows(engine: Engine, workers: int = 1, **options: Any) -> list[dict[str, Any]]:
    out = io.StringIO()
    opts = ExportOptions(Format.DPO, **options)
    await export(engine.db, opts, out, optout_users=("U0OPT",), workers=workers)
    return [json.loads(line) for line in out.getvalue().splitlines()]


@pytest.mark.parametrize("workers", [1, 2])
async def test_battles_become_dpo_rows_with_the_majority_s_choice(
    migrated_database_url: str, servers: dict[str, FakeTGI], workers: int
) -> None:
    engine = await battle_engine(migrated_database_url, servers)
    try:
        a1, b1, a1_text, b1_text = await fight(engine, 1, "Koalas or wombats?")
        a2, b2, _, _ = await fight(engine, 2, "Tea or coffee?")
        a3, b3, _, _ = await fight(engine, 3, "Left or right?")
        a4, b4, a4_text, b4_text = await fight(engine, 4, "Sun or moon?")
        for user, choice in [("U1", "b"), ("U2", "b"), ("U3", "a")]:
            assert await engine.judge(a1, b1, user, choice)  # B by majority
        assert await engine.judge(a2, b2, "U1", "tie")
        assert await engine.judge(a3, b3, "U1", "both_bad")
        assert await engine.judge(a4, b4, "U1", "a")
        assert await engine.judge(a4, b4, "U0OPT", "b")  # opted out: not counted

        rows = await dpo_rows(engine, workers)

        assert [
            (r["prompt"][-1]["content"], r["chosen"][0]["content"], r["rejected"][0]["content"])
            for r in rows
        ] == [
            ("Koalas or wombats?", b1_text, a1_text),
            ("Sun or moon?", a4_text, b4_text),
        ]
    finally:
        await engine.close()


async def test_a_battle_outside_the_model_filter_gives_no_row(
    migrated_database_url: str, servers: dict[str, FakeTGI]
) -> None:
    engine = await battle_engine(migrated_database_url, servers)
    try:
        a, b, _, _ = await fight(engine, 5, "Which?")
        assert await engine.judge(a, b, "U1", "b")

        assert len(await dpo_rows(engine)) == 1
        assert await dpo_rows(engine, model="no-such-model") == []
    finally:
        await engine.close()


async def thumb(engine: Engine, answer: AnswerResult, rating: int) -> None:
    assert answer.answer_id is not None
    vote = FeedbackEvent(
        "slack", "U2", rating, answer.answer_id, "CB", platform_message_id=answer.message_ids[-1]
    )
    assert (await engine.handle_feedback(vote)).recorded


def prompt_texts(row: dict[str, Any]) -> list[str]:
    return [m["content"] for m in row["prompt"]]


@pytest.mark.parametrize("choice", ["a", "b", None])
async def test_later_rows_of_a_battle_thread_show_the_preferred_answer(
    migrated_database_url: str, servers: dict[str, FakeTGI], choice: str | None
) -> None:
    """The thread as the model saw it: the battle's preferred answer (A before any choice), not
    the latest (B)."""
    engine = await battle_engine(migrated_database_url, servers)
    try:
        a, b, a_text, b_text = await fight(engine, 6, "Koalas or wombats?")
        if choice is not None:
            assert await engine.judge(a, b, "U1", choice)
        follow_up = await engine.handle_message(said("Why?", battle_thread(6)), ThreadView())
        await thumb(engine, follow_up, 1)
        preferred = b_text if choice == "b" else a_text
        assert all(preferred in f.prompts[-1] for f in servers.values())  # what the models saw

        for fmt, workers in [(Format.KTO, 1), (Format.SFT, 1), (Format.KTO, 2)]:
            out = io.StringIO()
            await export(engine.db, ExportOptions(fmt), out, workers=workers)
            rows = [json.loads(line) for line in out.getvalue().splitlines()]

            assert [prompt_texts(r) for r in rows] == [["Koalas or wombats?", preferred, "Why?"]]
    finally:
        await engine.close()


async def test_a_pair_both_judged_and_thumbed_gives_one_dpo_row(
    migrated_database_url: str, servers: dict[str, FakeTGI]
) -> None:
    engine = await battle_engine(migrated_database_url, servers)
    try:
        a, b = sides(await engine.handle_message(said("Which?", battle_thread(7)), ThreadView()))
        assert await engine.judge(a.answer_id or 0, b.answer_id or 0, "U1", "a")
        await thumb(engine, a, 1)
        await thumb(engine, b, -1)

        rows = await dpo_rows(engine)

        assert [(r["chosen"][0]["content"], r["rejected"][0]["content"]) for r in rows] == [
            (a.text, b.text)
        ]
    finally:
        await engine.close()
