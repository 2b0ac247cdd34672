"""What `koalabot export` does with review decisions, --dedupe and redaction. Runs on SQLite and
PostgreSQL."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path
from typing import Any

import pytest

from koalabot.cli import main
from koalabot.export.options import ExportOptions, Format
from koalabot.export.pseudonyms import Pseudonymizer
from koalabot.export.run import export
from koalabot.export.summary import Summary
from koalabot.store.database import Database
from koalabot.store.review import Decision, decide
from tests.helpers_data import Seed

pytestmark = pytest.mark.compiled_build

SECRET = "review-export-secret"


async def rows_of(db: Database, fmt: str, **options: Any) -> tuple[list[dict[str, Any]], Summary]:
    out = io.StringIO()
    options.setdefault("pseudonym_secret", None)
    summary = await export(db, ExportOptions(Format(fmt), **options), out)
    return [json.loads(line) for line in out.getvalue().splitlines()], summary


def answers(rows: list[dict[str, Any]]) -> list[str]:
    """The rated answer of each row, whatever the format."""
    found = []
    for row in rows:
        if "messages" in row:
            found.append(row["messages"][-1]["content"])
        elif "completion" in row:
            found.append(row["completion"][0]["content"])
        elif "chosen" in row:
            found.append(f"{row['chosen'][0]['content']} > {row['rejected'][0]['content']}")
        else:
            found.append(next(v for k, v in row.items() if k.startswith("gpt") and k[-1] > "0"))
    return found


# --- review decisions ------------------------------------------------------------------------


async def two_answers(db: Database) -> tuple[int, int]:
    t = await Seed(db).thread()
    await t.ask("What is a koala?")
    good = await t.answer("A marsupial.")
    await t.vote(good, "U1", 1)
    wrong = await t.answer("A bear.")
    await t.vote(wrong, "U2", -1)
    return good, wrong


@pytest.mark.parametrize("fmt", ["koala", "kto", "dpo", "sft", "openai"])
async def test_excluded_answers_never_appear(db: Database, fmt: str) -> None:
    good, wrong = await two_answers(db)
    await decide(db, good, Decision.EXCLUDE, reason="off_topic", reviewer="ana")
    await decide(db, wrong, Decision.EXCLUDE, reason="wrong", reviewer="ana")

    rows, summary = await rows_of(db, fmt)

    assert rows == []
    assert summary.skipped["excluded on review: off-topic"] == 1
    assert summary.skipped["excluded on review: wrong"] == 1


async def test_an_answer_excluded_as_private_is_not_shown_in_later_threads_either(
    db: Database,
) -> None:
    t = await Seed(db).thread()
    await t.ask("Who is on call?")
    private = await t.answer("Dana, at home on Elm Street.")
    await t.vote(private, "U1", 1)
    await t.ask("Thanks. And tomorrow?")
    later = await t.answer("Sam.")
    await t.vote(later, "U1", 1)
    await t.ask("And the day after?")
    wrong = await t.answer("Nobody.")
    await t.vote(wrong, "U2", 1)

    await decide(db, wrong, Decision.EXCLUDE, reason="wrong", reviewer="ana")
    rows, _ = await rows_of(db, "sft")
    assert answers(rows) == ["Dana, at home on Elm Street.", "Sam."]

    await decide(db, private, Decision.EXCLUDE, reason="private", reviewer="ana")
    rows, summary = await rows_of(db, "sft")
    assert rows == []
    assert summary.skipped == {
        "excluded on review: private": 1,
        "thread shows an answer excluded as unsafe or private": 1,
        "excluded on review: wrong": 1,
    }


async def test_a_corrected_answer_becomes_a_liked_example_in_every_format(db: Database) -> None:
    _, wrong = await two_answers(db)
    await decide(db, wrong, Decision.CORRECT, correction="A marsupial, not a bear.", reviewer="a")

    sft, _ = await rows_of(db, "sft")
    assert answers(sft) == ["A marsupial.", "A marsupial, not a bear."]
    openai, _ = await rows_of(db, "openai")
    assert openai[-1]["messages"][-1] == {
        "role": "assistant",
        "content": "A marsupial, not a bear.",
        "weight": 1,
    }
    kto, _ = await rows_of(db, "kto")
    assert [(a, row["label"]) for a, row in zip(answers(kto), kto, strict=True)] == [
        ("A marsupial.", True),
        ("A bear.", False),  # the original, as it was voted
        ("A marsupial, not a bear.", True),
    ]
    assert kto[2]["meta"]["answer_id"] == wrong
    assert (kto[1]["meta"]["review"], kto[2]["meta"]["review"]) == ("correct", "correction")
    koala, _ = await rows_of(db, "koala")
    assert koala[2]["gpt_1"] == "A marsupial, not a bear."
    assert koala[2]["fields"] == "[marker_user+human_0+marker_gpt],gpt_1,<|eos|>"
    dpo, _ = await rows_of(db, "dpo")
    assert answers(dpo) == ["A marsupial. > A bear.", "A marsupial, not a bear. > A bear."]
    assert dpo[1]["meta"]["chosen"]["review"] == "correction"
    assert dpo[1]["meta"]["rejected"]["answer_id"] == wrong


async def test_a_correction_counts_even_where_the_votes_would_not(db: Database) -> None:
    t = await Seed(db).thread()
    await t.ask("Summarise this thread")
    split = await t.answer("It is about koalas.")
    await t.votes(split, {"U1": 1, "U2": -1})
    await t.ask("Go on")
    failed = await t.answer("Koalas sle", status="failed")
    await t.vote(failed, "U1", -1)
    await decide(db, split, Decision.CORRECT, correction="Koalas: diet and sleep.", reviewer="a")
    await decide(db, failed, Decision.CORRECT, correction="Koalas sleep all day.", reviewer="a")

    rows, summary = await rows_of(db, "kto")

    assert [(a, row["label"]) for a, row in zip(answers(rows), rows, strict=True)] == [
        ("Koalas: diet and sleep.", True),
        ("Koalas sleep all day.", True),
    ]
    assert summary.skipped == {"net-zero votes": 1, "answer failed (see --include-failed)": 1}


async def test_reviewed_only_exports_included_and_corrected_answers(db: Database) -> None:
    seed = Seed(db)
    t = await seed.thread()
    await t.ask("What is a koala?")
    included = await t.answer("A marsupial.")
    await t.vote(included, "U1", 1)
    await t.ask("Do they drink?")
    corrected = await t.answer("Never.")
    await t.vote(corrected, "U1", -1)
    await t.ask("How long do they sleep?")
    unreviewed = await t.answer("About 20 hours a day.")
    await t.vote(unreviewed, "U1", 1)
    await decide(db, included, Decision.INCLUDE, reviewer="ana")
    await decide(db, corrected, Decision.CORRECT, correction="Rarely.", reviewer="ana")

    kto, summary = await rows_of(db, "kto", reviewed_only=True)
    assert [(a, row["label"]) for a, row in zip(answers(kto), kto, strict=True)] == [
        ("A marsupial.", True),
        ("Rarely.", True),
    ]
    assert summary.skipped == {"not included on review (--reviewed-only)": 1}
    dpo, _ = await rows_of(db, "dpo", reviewed_only=True)
    assert answers(dpo) == ["Rarely. > Never."]
    everything, _ = await rows_of(db, "kto")
    assert len(everything) == 4


# --- dedupe ------------------------------------------------------------------------------------


async def test_dedupe_keeps_the_first_answer_to_each_question(db: Database) -> None:
    seed = Seed(db)
    first = await seed.thread()
    await first.ask("What is a koala?")
    kept = await first.answer("A marsupial.")
    regenerated = await first.answer("An Australian marsupial.")
    await first.vote(kept, "U1", 1)
    await first.vote(regenerated, "U1", -1)
    await first.ask("thanks!")
    thanks = await first.answer("You're welcome.")
    await first.vote(thanks, "U1", 1)
    again = await seed.thread()
    await again.ask("what is a KOALA")
    repeat = await again.answer("A bear.")
    await again.vote(repeat, "U2", -1)
    await again.ask("Thanks")  # a follow-up to the same question: a repeat too
    repeat_thanks = await again.answer("Any time.")
    await again.vote(repeat_thanks, "U2", 1)
    other = await seed.thread()
    await other.ask("What is a wombat?")
    await other.ask("thanks!")  # the same words after another question: not a repeat
    other_thanks = await other.answer("Glad to help.")
    await other.vote(other_thanks, "U3", 1)

    all_rows, _ = await rows_of(db, "kto")
    rows, summary = await rows_of(db, "kto", dedupe=True)

    assert len(all_rows) == 6
    assert answers(rows) == [
        "A marsupial.",
        "An Australian marsupial.",
        "You're welcome.",
        "Glad to help.",
    ]
    assert summary.skipped == {"repeated question (--dedupe)": 2}
    pairs, _ = await rows_of(db, "dpo", dedupe=True)
    assert answers(pairs) == ["A marsupial. > An Australian marsupial."]


# --- redaction ---------------------------------------------------------------------------------


async def test_exports_redact_by_default_and_mentions_match_the_authors(db: Database) -> None:
    t = await Seed(db).thread()
    await t.ask(
        "Mail dana@example.com or call +1 415-555-0132; ask <@U0SAM>. Key: AKIAIOSFODNN7EXAMPLE",
        author="U0DANA",
    )
    answer = await t.answer("I'll mail dana@example.com and see https://x.example/?token=abc1.")
    await t.vote(answer, "U0SAM", 1)
    await t.ask("Thanks", author="U0SAM")

    rows, summary = await rows_of(db, "sft", pseudonym_secret=SECRET)

    question, reply = (m["content"] for m in rows[0]["prompt"] + rows[0]["completion"])
    authors = rows[0]["meta"]["authors"]
    assert question == f"Mail [EMAIL] or call [PHONE]; ask <@{pseudonym('U0SAM')}>. Key: [API_KEY]"
    assert reply == "I'll mail [EMAIL] and see [URL]."
    assert authors == [pseudonym("U0DANA")]
    assert summary.redacted
    assert summary.lines()[-1] == (
        "redacted 2 e-mail addresses, 1 phone number, 1 secret URL, 1 API key"
    )

    raw, summary = await rows_of(db, "sft", redact=False)
    assert "dana@example.com" in raw[0]["prompt"][0]["content"]
    assert "+1 415-555-0132" in raw[0]["prompt"][0]["content"]
    assert not summary.redacted


def pseudonym(user: str) -> str:
    """The pseudonym the export gives a Slack user (the same HMAC as the authors field)."""
    return Pseudonymizer(SECRET).user("slack", user)


async def test_string_prompts_are_redacted_too(db: Database) -> None:
    t = await Seed(db).thread()
    await t.ask("My email is dana@example.com")
    answer = await t.answer("Noted, dana@example.com.")
    await t.vote(answer, "U1", 1)

    rows, _ = await rows_of(db, "kto", string_prompt=True)

    assert rows[0]["prompt"] == ("BEGINNING OF CONVERSATION: USER: My email is [EMAIL] GPT:")
    assert rows[0]["completion"] == "Noted, [EMAIL]."


# --- the command line ----------------------------------------------------------------------------


async def test_export_command_line_flags(
    db: Database, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    seed = Seed(db)
    for author in ("U1", "U2"):
        t = await seed.thread()
        await t.ask("What is a koala? Mail me: kim@example.com", author=author)
        answer = await t.answer("A marsupial.")
        await t.vote(answer, author, 1)
    await decide(db, answer, Decision.INCLUDE, reviewer="ana")
    out = tmp_path / "rows.jsonl"
    base = ["export", "--format", "sft", "--out", str(out), "--database-url", db.url]
    base.append("--no-pseudonymize")

    async def run(*flags: str) -> tuple[list[dict[str, Any]], str]:
        capsys.readouterr()
        assert await asyncio.to_thread(main, [*base, *flags]) == 0
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        return rows, capsys.readouterr().err

    rows, err = await run()
    assert len(rows) == 2 and "kim@example.com" not in out.read_text()
    assert "redacted 2 e-mail addresses" in err
    rows, err = await run("--dedupe")
    assert len(rows) == 1
    assert "1  repeated question (--dedupe)" in err
    rows, err = await run("--reviewed-only")
    assert len(rows) == 1 and rows[0]["meta"]["review"] == "include"
    assert "1  not included on review (--reviewed-only)" in err
    rows, err = await run("--no-redact")
    assert "kim@example.com" in out.read_text()
    assert "nothing redacted (--no-redact)" in err
