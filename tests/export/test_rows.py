"""Rows (koalabot.export.rows): each format's layout for a thread built by hand, with text
redacted and ids pseudonymised as they leave. The database-backed scenarios are in
test_export.py."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from koalabot.export.options import ExportOptions, Format
from koalabot.export.pseudonyms import Pseudonymizer
from koalabot.export.redact import Kind
from koalabot.export.rows import RowBuilder, encode_row
from koalabot.export.summary import Summary
from tests.export.records import Build

pytestmark = pytest.mark.compiled_build

SECRET = "test-secret-0123456789"


def rows(build: Build, fmt: Format, **options: Any) -> tuple[list[dict[str, Any]], Summary]:
    summary = Summary(str(fmt))
    builder = RowBuilder(ExportOptions(fmt, **options), summary)
    return list(builder.rows(build.thread())), summary


def two_turns(rating: dict[str, int]) -> Build:
    build = Build()
    q1 = build.ask("Hello!")
    build.answer(q1, "Hi!")
    q2 = build.ask("Largest animal?")
    build.answer(q2, "The blue whale.", **rating)
    return build


def test_a_koala_row_masks_the_thread_and_trains_the_disliked_answer_under_its_marker() -> None:
    [row], _ = rows(two_turns({"down": 1}), Format.KOALA, meta=False)

    assert row == {
        "marker_user": "USER:",
        "marker_gpt": "GPT:",
        "marker_gpt_bad": "An Unhelpful Answer:",
        "human_0": "Hello!",
        "gpt_1": "Hi!",
        "human_2": "Largest animal?",
        "gpt_bad_3": "The blue whale.",
        "fields": "[marker_user+human_0+marker_gpt],[gpt_1],[<|eos|>],"
        "[marker_user+human_2+marker_gpt_bad],gpt_bad_3,<|eos|>",
    }


def test_a_kto_row_is_the_thread_the_answer_and_its_label() -> None:
    [row], _ = rows(two_turns({"up": 2, "down": 1}), Format.KTO, meta=False)

    assert row == {
        "prompt": [
            {"role": "user", "content": "Hello!"},
            {"role": "assistant", "content": "Hi!"},
            {"role": "user", "content": "Largest animal?"},
        ],
        "completion": [{"role": "assistant", "content": "The blue whale."}],
        "label": True,
    }


def test_an_openai_row_trains_only_the_rated_answer_and_has_no_meta() -> None:
    [row], _ = rows(two_turns({"up": 1}), Format.OPENAI)

    assert row == {
        "messages": [
            {"role": "user", "content": "Hello!"},
            {"role": "assistant", "content": "Hi!", "weight": 0},
            {"role": "user", "content": "Largest animal?"},
            {"role": "assistant", "content": "The blue whale.", "weight": 1},
        ]
    }


def test_sft_takes_liked_answers_only_and_says_why_it_skipped() -> None:
    found, summary = rows(two_turns({"down": 1}), Format.SFT)

    assert found == []
    assert dict(summary.skipped) == {"disliked (sft takes liked answers only)": 1}


def test_dpo_pairs_regenerations_with_opposite_votes() -> None:
    build = Build()
    q = build.ask("Q")
    bad = build.answer(q, "bad", down=1)
    good = build.answer(q, "good", up=1)

    [row], _ = rows(build, Format.DPO)

    assert row["prompt"] == [{"role": "user", "content": "Q"}]
    assert (row["chosen"], row["rejected"]) == (
        [{"role": "assistant", "content": "good"}],
        [{"role": "assistant", "content": "bad"}],
    )
    assert (row["meta"]["chosen"]["answer_id"], row["meta"]["rejected"]["answer_id"]) == (
        good.id,
        bad.id,
    )


def test_text_is_redacted_and_ids_pseudonymised_as_rows_are_built() -> None:
    build = Build()
    q = build.ask("Mail <@U7> at ada@example.com", author="U1")
    build.answer(q, "Done.", up=1)

    [row], summary = rows(build, Format.KTO, pseudonym_secret=SECRET)

    pseudo = Pseudonymizer(SECRET)
    assert row["prompt"][0]["content"] == f"Mail <@{pseudo.user('slack', 'U7')}> at [EMAIL]"
    assert row["meta"]["authors"] == [pseudo.user("slack", "U1")]
    assert summary.redacted[Kind.EMAIL] == 1


def test_a_new_summary_counts_what_comes_after_it() -> None:
    first = Summary("sft")
    builder = RowBuilder(ExportOptions(Format.SFT), first)
    list(builder.rows(two_turns({"down": 1}).thread()))
    later = Summary("sft")
    builder.summary = later
    list(builder.rows(two_turns({"down": 1}).thread()))

    assert sum(first.skipped.values()) == sum(later.skipped.values()) == 1
    assert (first.threads, later.threads) == (1, 1)


def test_a_row_is_one_compact_utf8_json_line() -> None:
    assert encode_row({"text": "Grüße 🐨", "n": 1}) == '{"text":"Grüße 🐨","n":1}\n'.encode()
    assert orjson.loads(encode_row({"a": [1]})) == {"a": [1]}
