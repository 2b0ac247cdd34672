"""The review page's SQL: which rated answers it lists, with what, and the decisions stored.
Runs on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import update

from koalabot.store.database import Database
from koalabot.store.forget import forget_user
from koalabot.store.models import Generation, Review
from koalabot.store.review import (
    AnswerNotFoundError,
    Decision,
    Filters,
    Rating,
    ReviewError,
    State,
    decide,
    facets,
    get_answer,
    list_answers,
    undo,
)
from tests.helpers_data import START, Seed, table_rows


async def test_lists_rated_answers_newest_first_with_thread_votes_and_generation(
    db: Database,
) -> None:
    seed = Seed(db)
    t = await seed.thread()
    await t.ask("What is a koala?", author="U1")
    first = await t.answer("A marsupial.")
    await t.vote(first, "U1", 1)
    await t.ask("What do they eat?", author="U2")
    unrated = await t.answer("Leaves.")
    await t.answer("Eucalyptus leaves.", parent=t.questions[1][0])  # regenerated, shown last
    await t.ask("How long do they sleep?", author="U1")
    last = await t.answer("About 20 hours a day.")
    await t.votes(last, {"U1": -1, "U2": -1, "U3": 1})
    async with db.engine.begin() as conn:
        await conn.execute(
            update(Generation)
            .where(Generation.message_id == last)
            .values(time_to_first_token=0.42, total_time=1.5, prompt_tokens=61)
        )

    page = await list_answers(db)

    assert [item.id for item in page.items] == [last, first]
    assert unrated not in {item.id for item in page.items}
    assert page.total == 2
    item = page.items[0]
    assert [(turn.role, turn.text) for turn in item.context] == [
        ("user", "What is a koala?"),
        ("assistant", "A marsupial."),
        ("user", "What do they eat?"),
        ("assistant", "Eucalyptus leaves."),
        ("user", "How long do they sleep?"),
    ]
    assert (item.up, item.down) == (1, 2)
    assert sorted(v.user for v in item.votes) == ["U1", "U2", "U3"]
    assert item.generation is not None
    assert item.generation.template == "koala"
    assert item.generation.parameters == {"temperature": 0.7}
    assert item.generation.time_to_first_token == pytest.approx(0.42)
    assert item.generation.model_id == "koala-13b"
    assert item.review is None
    assert page.items[1].context[-1].text == "What is a koala?"


async def test_an_earlier_answer_is_shown_as_it_was_when_the_rated_one_was_written(
    db: Database,
) -> None:
    seed = Seed(db)
    t = await seed.thread()
    q1 = await t.ask("Tell me a joke")
    await t.answer("Why did the koala...")
    await t.ask("Another one")
    rated = await t.answer("A wombat walks into a bar.")
    await t.vote(rated, "U1", 1)
    await t.answer("A better koala joke.", parent=q1)  # regenerated after the rated answer

    item = (await list_answers(db)).items[0]

    assert [turn.text for turn in item.context] == [
        "Tell me a joke",
        "Why did the koala...",
        "Another one",
    ]


async def seed_mix(db: Database) -> dict[str, int]:
    seed = Seed(db)
    ids: dict[str, int] = {}
    slack = await seed.thread(platform="slack", channel="C1")
    await slack.ask("liked on slack")
    ids["liked"] = await slack.answer("yes", model="koala-13b")
    await slack.vote(ids["liked"], "U1", 1)
    await slack.ask("disliked on slack")
    ids["disliked"] = await slack.answer("no", model="koala-7b")
    await slack.vote(ids["disliked"], "U1", -1)
    other = await seed.thread(platform="slack", channel="C2", at=START + timedelta(days=3))
    await other.ask("split on another channel")
    ids["split"] = await other.answer("maybe")
    await other.votes(ids["split"], {"U1": 1, "U2": -1})
    discord = await seed.thread(platform="discord", channel="G1")
    await discord.ask("liked on discord", author="42")
    ids["discord"] = await discord.answer("sure")
    await discord.vote(ids["discord"], "42", 1)
    return ids


async def listed(db: Database, **filters: Any) -> set[int]:
    return {item.id for item in (await list_answers(db, Filters(**filters))).items}


async def test_filters_by_platform_channel_model_rating_and_date(db: Database) -> None:
    ids = await seed_mix(db)

    assert await listed(db, platform="discord") == {ids["discord"]}
    assert (await list_answers(db, Filters(platform="slack"))).total == 3
    assert await listed(db, channel="C2") == {ids["split"]}
    assert await listed(db, model="koala-7b") == {ids["disliked"]}
    assert await listed(db, rating=Rating.LIKED) == {ids["liked"], ids["discord"]}
    assert await listed(db, rating=Rating.DISLIKED) == {ids["disliked"]}
    assert await listed(db, rating=Rating.SPLIT) == {ids["split"]}
    day3 = datetime(2024, 5, 4, tzinfo=UTC)
    assert await listed(db, since=day3) == {ids["split"], ids["discord"]}
    assert await listed(db, until=day3) == {ids["liked"], ids["disliked"]}


async def test_filters_by_review_state(db: Database) -> None:
    ids = await seed_mix(db)
    await decide(db, ids["liked"], Decision.INCLUDE, reviewer="ana")
    await decide(db, ids["disliked"], Decision.EXCLUDE, reason="wrong", reviewer="ana")
    await decide(
        db, ids["split"], Decision.CORRECT, correction="Yes, and here is why.", reviewer="bo"
    )

    assert await listed(db, state=State.UNREVIEWED) == {ids["discord"]}
    assert await listed(db, state=State.REVIEWED) == {ids["liked"], ids["disliked"], ids["split"]}
    assert await listed(db, state=State.INCLUDED) == {ids["liked"]}
    assert await listed(db, state=State.EXCLUDED) == {ids["disliked"]}
    assert await listed(db, state=State.CORRECTED) == {ids["split"]}


async def test_pages_walk_older_and_back_newer_without_gaps(db: Database) -> None:
    seed = Seed(db)
    t = await seed.thread()
    answers = []
    for n in range(7):
        await t.ask(f"question {n}")
        answers.append(await t.answer(f"answer {n}"))
        await t.vote(answers[-1], "U1", 1)
    newest_first = answers[::-1]

    first = await list_answers(db, limit=3)
    second = await list_answers(db, before=first.older, limit=3)
    third = await list_answers(db, before=second.older, limit=3)
    back = await list_answers(db, after=second.newer, limit=3)

    assert [i.id for i in first.items] == newest_first[:3]
    assert [i.id for i in second.items] == newest_first[3:6]
    assert [i.id for i in third.items] == newest_first[6:]
    assert (first.newer, third.older) == (None, None)
    assert [i.id for i in back.items] == newest_first[:3]
    assert back.newer is None
    assert first.total == second.total == 7
    assert first.total_text == "7"
    capped = await list_answers(db, limit=3, count_limit=5)
    assert capped.total_text == "5+"  # counting stops early on a large store


async def test_decisions_record_who_and_when_and_the_latest_wins(db: Database) -> None:
    seed = Seed(db)
    t = await seed.thread()
    await t.ask("What is a koala?")
    answer = await t.answer("A bear.")
    await t.vote(answer, "U1", -1)
    before = datetime.now(UTC)

    await decide(db, answer, Decision.EXCLUDE, reason="wrong", reviewer="ana")
    stored = await decide(
        db, answer, Decision.CORRECT, correction="  A marsupial, not a bear.\n", reviewer="bo"
    )

    rows = await table_rows(db, Review)
    assert len(rows) == 1
    assert rows[0]["decision"] == "correct"
    assert rows[0]["correction"] == "A marsupial, not a bear."
    assert rows[0]["reason"] is None
    assert rows[0]["reviewer"] == "bo"
    assert stored.decided_at >= before
    item = await get_answer(db, answer)
    assert item.text == "A bear."  # the original is kept as it was
    assert item.review is not None
    assert (item.review.decision, item.review.reviewer) == (Decision.CORRECT, "bo")

    assert await undo(db, answer)
    assert (await get_answer(db, answer)).review is None
    assert not await undo(db, answer)


async def test_bad_decisions_are_refused_with_a_reason(db: Database) -> None:
    seed = Seed(db)
    t = await seed.thread()
    await t.ask("Hi")
    rated = await t.answer("Hello")
    await t.vote(rated, "U1", 1)
    unrated = await t.answer("Hey")

    with pytest.raises(ReviewError, match="excluding needs a reason, one of: wrong, unsafe"):
        await decide(db, rated, Decision.EXCLUDE, reviewer="ana")
    with pytest.raises(ReviewError, match="needs a reason"):
        await decide(db, rated, Decision.EXCLUDE, reason="boring", reviewer="ana")
    with pytest.raises(ReviewError, match="the answer it should have given"):
        await decide(db, rated, Decision.CORRECT, correction="   ", reviewer="ana")
    with pytest.raises(AnswerNotFoundError):
        await decide(db, unrated, Decision.INCLUDE, reviewer="ana")
    with pytest.raises(AnswerNotFoundError):
        await get_answer(db, unrated)
    assert await table_rows(db, Review) == []


async def test_forgetting_a_user_removes_the_decisions_on_answers_to_them(db: Database) -> None:
    seed = Seed(db)
    t = await seed.thread()
    await t.ask("my number is 555-0100", author="U9")
    answer = await t.answer("Noted.")
    await t.vote(answer, "U9", 1)
    await decide(db, answer, Decision.CORRECT, correction="I won't store 555-0100.", reviewer="a")

    await forget_user(db, "slack", "U9")

    assert await table_rows(db, Review) == []


async def test_facets_offer_what_rated_answers_have(db: Database) -> None:
    await seed_mix(db)

    offered = await facets(db)

    assert offered.platforms == ["discord", "slack"]
    assert offered.channels == [("discord", "G1"), ("slack", "C1"), ("slack", "C2")]
    assert offered.models == ["koala-13b", "koala-7b"]
