"""Battles: which threads fight, a person's latest choice, and the dpo pairs it gives."""

from __future__ import annotations

from collections import Counter

import pytest

from koalabot.backend.assign import WeightedModel
from koalabot.backend.models import ModelSet
from koalabot.events import Clicked, ThreadKey
from koalabot.export.battles import battle_pairs
from koalabot.store.judgements import JudgementRecord, judgements_on
from tests.engine.test_engine import ThreadView, said
from tests.fakes.tgi import FakeTGI
from tests.models.test_battle_threads import BATTLE, battle_engine
from tests.models.test_engine_models import servers

__all__ = ["servers"]  # the two model servers, as a fixture

TWO = [WeightedModel("koala", 1.0), WeightedModel("candidate", 1.0)]


def _models(weights: list[WeightedModel]) -> ModelSet:
    return ModelSet({}, weights)


def _thread(channel: str, n: int) -> ThreadKey:
    return ThreadKey("slack", "T1", channel, f"1700000{n:03d}.000100")


def test_every_thread_of_a_battle_channel_fights_and_others_by_share() -> None:
    models = _models(TWO)
    in_channel = [models.battle(_thread("CB", n), "m1", ["CB"], 0.0) for n in range(50)]
    elsewhere = [models.battle(_thread("C1", n), "m1", ["CB"], 0.3) for n in range(400)]

    assert all(sides is not None and set(sides) == {"koala", "candidate"} for sides in in_channel)
    assert Counter(s[0] for s in in_channel if s)["koala"] in range(15, 36)  # A/B order by coin
    assert 0.22 < sum(s is not None for s in elsewhere) / 400 < 0.38


def test_no_battle_with_a_single_model() -> None:
    models = _models([WeightedModel("koala", 1.0), WeightedModel("old", 0.0)])

    assert models.battle(_thread("CB", 1), "m1", ["CB"], 1.0) is None


def test_a_pair_becomes_a_preference_by_majority_and_ties_say_nothing() -> None:
    judged = [
        JudgementRecord(1, 2, "U1", "a"),
        JudgementRecord(1, 2, "U2", "a"),
        JudgementRecord(1, 2, "U3", "b"),
        JudgementRecord(3, 4, "U1", "b"),
        JudgementRecord(3, 4, "U2", "tie"),
        JudgementRecord(5, 6, "U1", "tie"),
        JudgementRecord(7, 8, "U1", "both_bad"),
        JudgementRecord(9, 10, "U1", "a"),
        JudgementRecord(9, 10, "U2", "b"),
    ]

    assert battle_pairs(judged) == [(1, 2), (4, 3)]


async def test_a_person_s_latest_choice_counts_and_only_between_a_battle_s_a_and_b(
    migrated_database_url: str, servers: dict[str, FakeTGI]
) -> None:
    engine = await battle_engine(migrated_database_url, servers)
    try:
        fought = await engine.handle_message(said("Hello?", BATTLE), ThreadView())
        assert fought.rival is not None
        a, b = fought.answer_id or 0, fought.rival.answer_id or 0
        clicked = Clicked("CB", fought.message_ids[-1])  # the 🔄 under answer A
        retried = await engine.regenerate(a, "U1", ThreadView(), clicked)
        assert retried.answer_id is not None

        assert await engine.judge(a, b, "U1", "a")
        assert await engine.judge(a, b, "U1", "b")  # changed their mind
        assert await engine.judge(a, b, "U2", "tie")
        assert not await engine.judge(a, fought.user_message_id or 0, "U1", "a")  # a question
        assert not await engine.judge(a, retried.answer_id, "U1", "a")  # A and its 🔄: no battle
        assert not await engine.judge(b, a, "U1", "a")  # B is never A
        assert not await engine.judge(a, b, "U1", "maybe")

        stored = await judgements_on(engine.db, [a])
        assert [(j.user, j.choice) for j in stored] == [("U1", "b"), ("U2", "tie")]
        assert battle_pairs(stored) == [(b, a)]
    finally:
        await engine.close()


@pytest.mark.parametrize("choice", ["a", "b"])
def test_one_choice_gives_one_pair(choice: str) -> None:
    pairs = battle_pairs([JudgementRecord(1, 2, "U1", choice)])
    assert pairs == ([(1, 2)] if choice == "a" else [(2, 1)])
