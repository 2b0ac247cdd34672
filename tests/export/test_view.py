"""The thread as the export sees it (koalabot.export.view): which earlier turns a rated answer's
thread shows, and which voted answers become rows, each one left out counted with its reason.
Threads are built by hand as the store hands them over, no database."""

from __future__ import annotations

import pytest

from koalabot.export.options import ExportOptions, Format
from koalabot.export.summary import Summary
from koalabot.export.view import CORRECTION, Selection, ThreadView, is_liked
from koalabot.store.threads import ThreadMessage
from tests.export.records import Build

pytestmark = pytest.mark.compiled_build


def texts(messages: list[ThreadMessage]) -> list[str]:
    return [m.text for m in messages]


def select(build: Build, optouts: frozenset[str] = frozenset(), **options: object) -> Summary:
    summary = Summary("kto")
    selection = Selection(ExportOptions(Format.KTO, **options), summary)  # type: ignore[arg-type]
    kept = list(selection.candidates(ThreadView(build.thread(), optouts)))
    summary.rows = len(kept)
    return summary


def test_a_thread_shows_each_question_with_the_answer_shown_last_before_the_rated_one() -> None:
    build = Build()
    q1 = build.ask("Q1")
    build.answer(q1, "A1")
    build.answer(q1, "A1 regenerated")
    q2 = build.ask("Q2")
    rated = build.answer(q2, "A2", up=1)
    build.answer(q1, "A1 regenerated after A2")

    view = ThreadView(build.thread())

    assert texts(view.context(q2.id, rated.id)) == ["Q1", "A1 regenerated", "Q2"]
    assert texts(view.context(q1.id, rated.id)) == ["Q1"]
    assert view.voted == [rated]


def test_every_voted_answer_left_out_is_counted_with_its_reason() -> None:
    build = Build()
    q = build.ask("Q")
    build.answer(q, "tied", up=1, down=1)
    build.answer(q, "excluded", up=1, review="exclude", review_reason="wrong")
    build.answer(q, "only opted-out votes", ignored=2)
    build.answer(q, "liked", up=2)

    summary = select(build)

    assert summary.rows == 1
    assert (summary.threads, summary.voted_answers) == (1, 4)
    assert dict(summary.skipped) == {
        "net-zero votes": 1,
        "excluded on review: wrong": 1,
        "votes only from opted-out users": 1,
    }


def test_no_thread_reaching_an_opted_out_users_message_becomes_a_row() -> None:
    build = Build()
    q1 = build.ask("Q1")
    build.answer(q1, "before", up=1)
    q2 = build.ask("Q2", author="U9")
    build.answer(q2, "after", up=1)

    summary = select(build, optouts=frozenset({"slack:U9"}))

    assert summary.rows == 1
    assert dict(summary.skipped) == {"opted-out user in the thread": 1}


def test_an_answer_withheld_as_private_is_shown_in_no_later_thread() -> None:
    build = Build()
    q1 = build.ask("Q1")
    build.answer(q1, "a secret", review="exclude", review_reason="private")
    q2 = build.ask("Q2")
    build.answer(q2, "A2", up=1)

    summary = select(build)

    assert summary.rows == 0
    assert dict(summary.skipped) == {"thread shows an answer excluded as unsafe or private": 1}


def test_a_correction_becomes_a_liked_answer_of_its_own() -> None:
    build = Build()
    q = build.ask("Q")
    wrong = build.answer(q, "wrong", down=1, review="correct", correction="right")
    selection = Selection(ExportOptions(Format.KTO), Summary("kto"))

    kept = [answer for answer, _ in selection.candidates(ThreadView(build.thread()))]

    assert [(a.id, a.text, a.review) for a in kept] == [
        (wrong.id, "wrong", "correct"),
        (-wrong.id, "right", CORRECTION),
    ]
    assert [is_liked(a) for a in kept] == [False, True]
    assert selection.corrected == {-wrong.id: wrong}
