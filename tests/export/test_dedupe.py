"""Dedupe at the user-query level: which questions count as the same, and who keeps them."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from koalabot.export.dedupe import Deduper, normalise, question_key

pytestmark = pytest.mark.compiled_build


def test_case_spacing_and_punctuation_do_not_make_a_new_question() -> None:
    same = ["What is a koala?", "what is a  KOALA", "  What is a koala?!\n", "ｗｈａｔ is a koala"]

    assert {normalise(text) for text in same} == {"what is a koala"}
    assert len({question_key([text]) for text in same}) == 1


def test_different_words_are_different_questions() -> None:
    assert question_key(["What is a koala?"]) != question_key(["What is a wombat?"])
    assert question_key(["a b"]) != question_key(["ab"])


def test_a_follow_up_repeats_only_when_the_thread_before_it_repeats() -> None:
    thanks_after_koala = question_key(["What is a koala?", "thanks!"])
    thanks_after_wombat = question_key(["What is a wombat?", "thanks!"])

    assert thanks_after_koala != thanks_after_wombat
    assert thanks_after_koala == question_key(["what is a koala", "Thanks"])
    # message boundaries count: two messages are not one message with both texts
    assert question_key(["a", "b"]) != question_key(["a b"])


def test_the_first_message_asking_a_question_keeps_it_with_all_its_answers() -> None:
    dedupe = Deduper()
    koala = question_key(["What is a koala?"])

    assert dedupe.keep(koala, message_id=1)
    assert dedupe.keep(koala, message_id=1)  # a regenerated answer to the same message
    dedupe.new_conversation()
    assert not dedupe.keep(koala, message_id=7)  # asked again in another thread
    assert not dedupe.keep(koala, message_id=7)
    assert dedupe.keep(question_key(["What is a wombat?"]), message_id=8)


@given(st.text(max_size=80))
def test_normalising_is_idempotent(text: str) -> None:
    assert normalise(normalise(text)) == normalise(text)
