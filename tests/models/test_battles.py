"""Battles: which threads fight, a person's latest choice, and the dpo pairs it gives."""

from __future__ import annotations

from collections import Counter

import pytest

from koalabot.backend.assign import WeightedModel
from koalabot.backend.models import ModelSet
from koalabot.engine.engine import Engine
from koalabot.events import Clicked, ThreadKey
from koalabot.export.battles import battle_pairs
from koalabot.store.judgements import JudgementRecord, judgements_on
from tests.engine.test_engine import ThreadView, make_settings, said
from tests.fakes.tgi import FakeTGI

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


async def test_a_person_s_latest_choice_counts_and_only_between_two_answers_to_one_message(
    migrated_database_url: str, fake_tgi: FakeTGI
) -> None:
    engine = await Engine.open(make_settings(migrated_database_url, fake_tgi))
    try:
        first = await engine.handle_message(said("Hello?"), ThreadView())
        assert first.answer_id is not None
        clicked = Clicked("C1", first.message_ids[-1])  # the 🔄 under the first answer
        other = await engine.regenerate(first.answer_id, "U1", ThreadView(), clicked)
        assert other.answer_id is not None
        a, b = first.answer_id, other.answer_id

        assert await engine.judge(a, b, "U1", "a")
        assert await engine.judge(a, b, "U1", "b")  # changed their mind
        assert await engine.judge(a, b, "U2", "tie")
        assert not await engine.judge(a, first.user_message_id or 0, "U1", "a")  # not an answer
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
