"""`koalabot export` rows: each format against the field rules of reference/tgi-and-koala.md §4–5,
threads, filters, opt-outs, pseudonyms and the summary. Runs on SQLite and PostgreSQL."""

from __future__ import annotations

import io
import json
import os
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from koalabot.export import parallel as export_parallel
from koalabot.export.options import ExportOptions, Format
from koalabot.export.run import export
from koalabot.export.summary import Summary
from koalabot.prompt.templates import TEMPLATES, Turn, render
from koalabot.store import threads as store_threads
from koalabot.store.database import Database, open_database
from tests.helpers_data import MODEL, START, Seed

pytestmark = pytest.mark.compiled_build

SECRET = "test-secret-0123456789"
ROLES = {"system", "user", "assistant"}
# reference §5.3: the message keys OpenAI's chat fine-tuning validation allows.
OPENAI_MESSAGE_KEYS = {"role", "content", "name", "function_call", "weight"}


async def rows_of(
    db: Database, fmt: str, optouts: tuple[str, ...] = (), **options: Any
) -> tuple[list[dict[str, Any]], Summary]:
    out = io.StringIO()
    options.setdefault("pseudonym_secret", None)
    summary = await export(db, ExportOptions(Format(fmt), **options), out, optout_users=optouts)
    lines = out.getvalue().splitlines()
    return [json.loads(line) for line in lines], summary


def easylm_text(row: dict[str, Any]) -> tuple[str, str]:
    """(masked text, trained text) of a koala row, read as EasyLM's TextProcessor reads it:
    fields split on ",", "[...]" masked, "+" joined by a space, <|eos|> as "</s>"; fields are
    tokenized apart, so nothing goes between them."""
    masked: list[str] = []
    trained: list[str] = []
    for field in row["fields"].split(","):
        target = trained
        if field.startswith("[") and field.endswith("]"):
            field, target = field[1:-1], masked
        target.append(
            "</s>" if field == "<|eos|>" else " ".join(row[key] for key in field.split("+"))
        )
    return "".join(masked), "".join(trained)


def sequence(row: dict[str, Any]) -> str:
    """The whole token stream of a koala row as text, masked and trained parts in order."""
    parts = []
    for field in row["fields"].split(","):
        field = field.strip("[]")
        parts.append("</s>" if field == "<|eos|>" else " ".join(row[k] for k in field.split("+")))
    return "".join(parts)


# --- koala -------------------------------------------------------------------------------------


async def test_single_turn_koala_rows_are_the_koala_pipeline_rows(db: Database) -> None:
    seed = Seed(db)
    thread = await seed.thread()
    await thread.ask("What is a koala?")
    good = await thread.answer("A koala is a marsupial native to Australia.")
    await thread.vote(good, "U2", 1)
    other = await seed.thread()
    await other.ask("What is a koala?")
    bad = await other.answer("No idea.")
    await other.vote(bad, "U2", -1)

    out = io.StringIO()
    options = ExportOptions(Format.KOALA, meta=False)
    await export(db, options, out)

    # The two HH rows of reference §4.3 (create_hf_data_v2.py process_dialogue): the same keys in
    # the same order with the same values, written compactly (no space after "," and ":").
    reference = [
        '{"marker_user": "USER:", "marker_gpt": "GPT:", "marker_gpt_bad": "An Unhelpful Answer:", '
        '"human_0": "What is a koala?", "gpt_1": "A koala is a marsupial native to Australia.", '
        '"fields": "[marker_user+human_0+marker_gpt],gpt_1,<|eos|>"}',
        '{"marker_user": "USER:", "marker_gpt": "GPT:", "marker_gpt_bad": "An Unhelpful Answer:", '
        '"human_0": "What is a koala?", "gpt_bad_1": "No idea.", '
        '"fields": "[marker_user+human_0+marker_gpt_bad],gpt_bad_1,<|eos|>"}',
    ]
    lines = out.getvalue().splitlines(keepends=True)
    assert [list(json.loads(line).items()) for line in lines] == [
        list(json.loads(line).items()) for line in reference
    ]
    assert lines == [
        json.dumps(json.loads(line), ensure_ascii=False, separators=(",", ":")) + "\n"
        for line in reference
    ]


async def test_koala_multi_turn_trains_only_the_rated_answer(db: Database) -> None:
    thread = await Seed(db).thread()
    await thread.ask("Hello!")
    first = await thread.answer("Hi! How can I help you?")
    await thread.ask("What is the largest animal on earth?")
    liked = await thread.answer("The blue whale.")
    disliked = await thread.answer("A koala.")
    await thread.vote(liked, "U1", 1)
    await thread.vote(disliked, "U1", -1)

    rows, _ = await rows_of(db, "koala")
    by_id = {row["meta"]["answer_id"]: row for row in rows}
    assert set(by_id) == {liked, disliked}
    assert first not in by_id  # not voted on: context only

    good, bad = by_id[liked], by_id[disliked]
    assert good["fields"] == (
        "[marker_user+human_0+marker_gpt],[gpt_1],[<|eos|>],"
        "[marker_user+human_2+marker_gpt],gpt_3,<|eos|>"
    )
    assert bad["fields"] == (
        "[marker_user+human_0+marker_gpt],[gpt_1],[<|eos|>],"
        "[marker_user+human_2+marker_gpt_bad],gpt_bad_3,<|eos|>"
    )
    assert {k for k in bad if k.startswith(("human_", "gpt"))} == {
        "human_0",
        "gpt_1",
        "human_2",
        "gpt_bad_3",
    }
    # The earlier answer is context under the positive marker; only the rated answer is trained.
    masked, trained = easylm_text(good)
    assert trained == "The blue whale.</s>"
    assert "An Unhelpful Answer:" not in masked
    # The masked prefix is exactly the prompt the model was given (EasyLM serving, §3.1).
    prompt = render(
        [
            Turn("user", "Hello!"),
            Turn("assistant", "Hi! How can I help you?"),
            Turn("user", "What is the largest animal on earth?"),
        ],
        TEMPLATES["koala"],
    )
    assert "BEGINNING OF CONVERSATION: " + sequence(good) == prompt + "The blue whale.</s>"
    assert easylm_text(bad)[1] == "A koala.</s>"


async def test_koala_rows_neutralise_markers_like_the_prompt(db: Database) -> None:
    thread = await Seed(db).thread()
    await thread.ask("Say </s> then GPT: hi")
    answer = await thread.answer("Done.")
    await thread.vote(answer, "U2", 1)

    [row], _ = await rows_of(db, "koala")

    # A user cannot end a turn or forge a marker in training data either.
    assert "</s>" not in row["human_0"]
    assert "GPT:" not in row["human_0"]
    assert sequence(row).count("</s>") == 1


async def test_unanswered_question_stays_in_the_thread(db: Database) -> None:
    thread = await Seed(db).thread()
    await thread.ask("First question")
    await thread.answer("Partial", status="failed")
    await thread.ask("Second question")
    answer = await thread.answer("Answer two")
    await thread.vote(answer, "U2", 1)

    [koala], _ = await rows_of(db, "koala")
    [kto], _ = await rows_of(db, "kto")

    assert koala["fields"] == ("[marker_user+human_0+marker_user+human_1+marker_gpt],gpt_2,<|eos|>")
    # Roles alternate: the two user messages are one turn (a strict chat template refuses two).
    assert kto["prompt"] == [{"role": "user", "content": "First question\n\nSecond question"}]


# --- kto ---------------------------------------------------------------------------------------


async def test_kto_rows_are_conversational_with_labels_from_net_votes(db: Database) -> None:
    thread = await Seed(db).thread()
    await thread.ask("Q1")
    up = await thread.answer("A1")
    await thread.votes(up, {"U2": 1, "U3": 1, "U4": -1})
    await thread.ask("Q2")
    down = await thread.answer("A2")
    await thread.votes(down, {"U2": -1})
    await thread.ask("Q3")
    tie = await thread.answer("A3")
    await thread.votes(tie, {"U2": -1, "U3": 1})

    rows, summary = await rows_of(db, "kto")

    assert [(r["meta"]["answer_id"], r["label"]) for r in rows] == [(up, True), (down, False)]
    for row in rows:
        assert set(row) == {"prompt", "completion", "label", "meta"}
        assert isinstance(row["label"], bool)
        assert row["prompt"][-1]["role"] == "user"
        assert [m["role"] for m in row["prompt"]] == ["user", "assistant"] * (
            len(row["prompt"]) // 2
        ) + ["user"]
        assert len(row["completion"]) == 1 and row["completion"][0]["role"] == "assistant"
    assert rows[1]["prompt"] == [
        {"role": "user", "content": "Q1"},
        {"role": "assistant", "content": "A1"},
        {"role": "user", "content": "Q2"},
    ]
    assert rows[0]["meta"]["votes"] == {"up": 2, "down": 1}
    assert summary.skipped == {"net-zero votes": 1}


async def test_kto_string_prompt_is_the_exact_stored_prompt(db: Database) -> None:
    thread = await Seed(db).thread()
    await thread.ask("Hello!")
    first = await thread.answer("Hi! How can I help you?")
    await thread.vote(first, "U2", 1)
    await thread.ask("What is the largest animal on earth?")
    second = await thread.answer("The blue whale.", template="koala-fastchat")
    await thread.vote(second, "U2", -1)

    rows, _ = await rows_of(db, "kto", string_prompt=True, meta=False)

    assert rows == [
        {
            "prompt": "BEGINNING OF CONVERSATION: USER: Hello! GPT:",
            "completion": "Hi! How can I help you?",
            "label": True,
        },
        {
            # Rendered with koala-fastchat, whose answers follow "GPT:" after a space.
            "prompt": "BEGINNING OF CONVERSATION: USER: Hello! GPT: Hi! How can I help you?</s>"
            "USER: What is the largest animal on earth? GPT:",
            "completion": " The blue whale.",
            "label": False,
        },
    ]


async def test_string_prompt_needs_a_generation_record(db: Database) -> None:
    thread = await Seed(db).thread()
    await thread.ask("Q")
    answer = await thread.answer("A", generation=False)
    await thread.vote(answer, "U2", 1)

    rows, summary = await rows_of(db, "kto", string_prompt=True)

    assert rows == []
    assert summary.skipped == {"no stored prompt string (--string-prompt)": 1}


# --- dpo ---------------------------------------------------------------------------------------


async def test_dpo_is_empty_until_regenerations_exist(db: Database) -> None:
    thread = await Seed(db).thread()
    await thread.ask("Q")
    answer = await thread.answer("A")
    await thread.vote(answer, "U2", 1)

    rows, summary = await rows_of(db, "dpo")

    assert rows == []
    assert summary.skipped == {"no sibling answer with the opposite vote": 1}


async def test_dpo_pairs_regenerated_answers_with_opposite_votes(db: Database) -> None:
    thread = await Seed(db).thread()
    await thread.ask("Q1")
    await thread.answer("A1")
    await thread.ask("Q2")
    bad = await thread.answer("bad answer")
    good = await thread.answer("good answer")  # the 🔄 regeneration
    same = await thread.answer("another good one")
    await thread.votes(bad, {"U1": -1})
    await thread.votes(good, {"U1": 1, "U2": 1})
    await thread.votes(same, {"U3": 1})

    rows, summary = await rows_of(db, "dpo")

    assert len(rows) == 2  # every liked answer against every disliked one
    for row in rows:
        assert set(row) == {"prompt", "chosen", "rejected", "meta"}
        assert row["prompt"] == [
            {"role": "user", "content": "Q1"},
            {"role": "assistant", "content": "A1"},
            {"role": "user", "content": "Q2"},
        ]
        assert row["rejected"] == [{"role": "assistant", "content": "bad answer"}]
        assert row["meta"]["rejected"]["answer_id"] == bad
    assert {r["chosen"][0]["content"] for r in rows} == {"good answer", "another good one"}
    assert rows[0]["meta"]["chosen"]["votes"] == {"up": 2, "down": 0}
    assert summary.rows == 2
    assert not summary.skipped


async def test_dpo_string_prompts(db: Database) -> None:
    thread = await Seed(db).thread()
    await thread.ask("Q")
    bad = await thread.answer("meh")
    good = await thread.answer("great")
    await thread.vote(bad, "U1", -1)
    await thread.vote(good, "U1", 1)

    rows, _ = await rows_of(db, "dpo", string_prompt=True, meta=False)

    assert rows == [
        {
            "prompt": "BEGINNING OF CONVERSATION: USER: Q GPT:",
            "chosen": "great",
            "rejected": "meh",
        }
    ]


# --- sft and openai ------------------------------------------------------------------------------


async def _liked_and_disliked(db: Database) -> tuple[int, int, int]:
    thread = await Seed(db).thread()
    await thread.ask("Q1")
    disliked = await thread.answer("A1 (bad)")
    await thread.vote(disliked, "U2", -1)
    await thread.ask("Q2")
    liked = await thread.answer("A2 (good)")
    await thread.vote(liked, "U2", 1)
    await thread.ask("Q3")
    unvoted = await thread.answer("A3")
    return disliked, liked, unvoted


async def test_sft_rows_are_liked_answers_with_their_thread(db: Database) -> None:
    _, liked, _ = await _liked_and_disliked(db)

    rows, summary = await rows_of(db, "sft")

    [row] = rows
    assert set(row) == {"prompt", "completion", "meta"}
    # TRL's prompt-completion form: only the liked answer is trained; the disliked answer stays
    # in the prompt as it happened.
    assert row["prompt"] == [
        {"role": "user", "content": "Q1"},
        {"role": "assistant", "content": "A1 (bad)"},
        {"role": "user", "content": "Q2"},
    ]
    assert row["completion"] == [{"role": "assistant", "content": "A2 (good)"}]
    assert row["meta"]["answer_id"] == liked
    assert summary.skipped == {"disliked (sft takes liked answers only)": 1}

    # --sft-messages: the whole thread is trained, so the disliked answer is left out of it.
    [row], _ = await rows_of(db, "sft", sft_messages=True)
    assert row["messages"] == [
        {"role": "user", "content": "Q1\n\nQ2"},
        {"role": "assistant", "content": "A2 (good)"},
    ]


async def test_openai_rows_pass_the_fine_tuning_format_checks(db: Database) -> None:
    await _liked_and_disliked(db)

    rows, _ = await rows_of(db, "openai")

    [row] = rows
    assert set(row) == {"messages"}  # no meta unless asked: OpenAI's checks are strict
    messages = row["messages"]
    assert all(set(m) <= OPENAI_MESSAGE_KEYS and m["role"] in ROLES for m in messages)
    assert all(isinstance(m["content"], str) and m["content"] for m in messages)
    assert any(m["role"] == "assistant" for m in messages)
    # Only the rated answer is trained on; the earlier (disliked) answer has weight 0.
    assert [m.get("weight") for m in messages] == [None, 0, None, 1]
    assert messages[1]["content"] == "A1 (bad)"

    with_meta, _ = await rows_of(db, "openai", meta=True)
    assert "meta" in with_meta[0]


# --- threads -----------------------------------------------------------------------------------


async def test_thread_holds_the_answer_shown_last_before_the_rated_one(db: Database) -> None:
    thread = await Seed(db).thread()
    q1 = await thread.ask("Q1")
    await thread.answer("A1 first")
    await thread.answer("A1 regenerated")
    await thread.answer("A1 broken", status="failed")
    await thread.ask("Q2")
    rated = await thread.answer("A2")
    await thread.vote(rated, "U2", 1)
    await thread.answer("A1 regenerated after Q2 was answered", parent=q1)
    await thread.ask("Q3 is later")

    [row], _ = await rows_of(db, "sft")

    assert [m["content"] for m in row["prompt"] + row["completion"]] == [
        "Q1",
        "A1 regenerated",
        "Q2",
        "A2",
    ]


async def test_threads_do_not_mix_between_conversations(db: Database) -> None:
    seed = Seed(db)
    first, second = await seed.thread(), await seed.thread()
    await first.ask("first Q1")
    await second.ask("second Q1")
    a = await first.answer("first A1")
    b = await second.answer("second A1")
    await first.vote(a, "U2", 1)
    await second.vote(b, "U2", 1)

    rows, _ = await rows_of(db, "sft", meta=False)

    assert [[m["content"] for m in r["prompt"] + r["completion"]] for r in rows] == [
        ["first Q1", "first A1"],
        ["second Q1", "second A1"],
    ]


async def test_conversations_read_in_many_batches_stay_whole(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed = Seed(db)
    for n in range(3):
        thread = await seed.thread()
        for turn in range(3):
            await thread.ask(f"Q{n}.{turn}")
            answer = await thread.answer(f"A{n}.{turn}")
            await thread.vote(answer, "U2", 1 if turn % 2 else -1)
    whole, _ = await rows_of(db, "kto")

    # Two rows per read: every conversation is split across batches.
    monkeypatch.setattr(store_threads, "BATCH", 2)
    batched, summary = await rows_of(db, "kto")

    assert batched == whole
    assert summary.rows == 9 and summary.threads == 3
    assert [m["content"] for m in batched[-1]["prompt"]] == ["Q2.0", "A2.0", "Q2.1", "A2.1", "Q2.2"]


@pytest.fixture
def spools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where forked export workers make their spool directories in this test."""
    root = tmp_path / "spools"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    return root


async def test_worker_processes_write_the_same_file_as_one(
    db: Database, monkeypatch: pytest.MonkeyPatch, spools: Path
) -> None:
    seed = Seed(db)
    for n in range(7):
        thread = await seed.thread(platform="discord" if n % 3 else "slack")
        await thread.ask(f"Q{n} from <@U0AUTHOR{n % 2}>", author="UOPT1" if n == 4 else f"U{n}")
        first = await thread.answer(f"A{n} mail me at koala{n}@example.com")
        second = await thread.answer(f"A{n} again", status="failed" if n == 5 else "ok")
        await thread.votes(first, {"U8": 1, "U9": 1 if n % 2 else -1})
        await thread.votes(second, {"U8": -1, "UOPT2": 1})
    await seed.opt_out("discord:UOPT2")

    async def written(fmt: Format, workers: int, conversations_per_range: int) -> Any:
        monkeypatch.setattr(export_parallel, "RANGE", conversations_per_range)
        out = io.BytesIO()
        options = ExportOptions(fmt, pseudonym_secret=SECRET)
        summary = await export(db, options, out, optout_users=("UOPT1",), workers=workers)
        assert os.listdir(spools) == []  # no spool left behind
        return out.getvalue(), summary.lines()

    for fmt in Format:
        whole = await written(fmt, 1, 1000)
        # One conversation per range: every range goes to a worker in turn.
        assert await written(fmt, 1, 1) == whole, fmt
        assert await written(fmt, 2, 1) == whole, fmt
        assert await written(fmt, 3, 2) == whole, fmt
        assert whole[0], fmt
    rows, lines = await written(Format.KTO, 2, 1)
    assert len(rows.splitlines()) == 5
    assert lines == [
        "wrote 5 kto rows from 14 voted answers in 7 conversations",
        "skipped 9:",
        "          6  net-zero votes",
        "          2  opted-out user in the thread",
        "          1  answer failed (see --include-failed)",
        "redacted 3 e-mail addresses",
    ]


class FailingOutput(io.BytesIO):
    """An output that fills up after its first write (a full disk, a closed pipe)."""

    def write(self, data: Any) -> int:
        if self.tell():
            raise OSError(28, "No space left on device")
        return super().write(data)


async def test_a_failed_write_stops_every_worker_and_leaves_no_spool(
    db: Database, monkeypatch: pytest.MonkeyPatch, spools: Path
) -> None:
    monkeypatch.setattr(export_parallel, "RANGE", 1)
    seed = Seed(db)
    for n in range(6):
        thread = await seed.thread()
        await thread.ask(f"Q{n}")
        await thread.vote(await thread.answer(f"A{n}"), "U8", 1)

    with pytest.raises(OSError, match="No space left"):
        await export(db, ExportOptions(Format.KTO), FailingOutput(), workers=2)

    assert os.listdir(spools) == []


async def test_an_in_memory_database_exports_too() -> None:
    db = await open_database("sqlite://")
    try:
        thread = await Seed(db).thread()
        await thread.ask("What is a koala?")
        answer = await thread.answer("A marsupial.")
        await thread.vote(answer, "U2", 1)

        [row], _ = await rows_of(db, "kto")
    finally:
        await db.close()

    assert row["completion"] == [{"role": "assistant", "content": "A marsupial."}]
    assert row["meta"]["created_at"] == "2024-05-01T12:03:00+00:00"


async def test_rows_are_utf8_json_with_escapes_only_where_json_needs_them(db: Database) -> None:
    text = 'Café ☕ 日本語 🐨 "quoted" back\\slash\ttab\nline\x01\x7f\u2028 end'
    thread = await Seed(db).thread()
    await thread.ask(text)
    answer = await thread.answer("Ünïcödé")
    await thread.vote(answer, "U2", 1)

    out = io.StringIO()
    await export(db, ExportOptions(Format.KTO, meta=False), out)

    line = out.getvalue()
    row = json.loads(line)
    assert row["prompt"] == [{"role": "user", "content": text}]
    assert "Café ☕ 日本語 🐨" in line and "Ünïcödé" in line  # as UTF-8, not \u escapes
    # The stdlib's own encoding (ensure_ascii=False), compact: one row per line, nothing else.
    assert line == json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n"


# --- filters -----------------------------------------------------------------------------------


async def test_filters_select_the_rated_answers(db: Database) -> None:
    seed = Seed(db)
    slack = await seed.thread(platform="slack", channel="C1")
    await slack.ask("old question")
    old = await slack.answer("old answer", at=START)
    await slack.ask("new question")
    new = await slack.answer("new answer", model="koala-7b", at=START + timedelta(days=10))
    await slack.votes(old, {"U2": 1})
    await slack.votes(new, {"U2": 1, "U3": 1})
    later = START + timedelta(days=11)
    other = await seed.thread(platform="discord", channel="D9", at=later, parent="D0GENERAL")
    await other.ask("discord question")
    failed = await other.answer("cut off", status="failed")
    await other.vote(failed, "222", -1)

    async def ids(**options: Any) -> list[int]:
        rows, _ = await rows_of(db, "kto", **options)
        return [r["meta"]["answer_id"] for r in rows]

    assert await ids() == [old, new]
    assert await ids(include_failed=True) == [old, new, failed]
    assert await ids(since=START + timedelta(days=1)) == [new]
    assert await ids(until=START + timedelta(days=1)) == [old]
    assert await ids(platform="discord", include_failed=True) == [failed]
    assert await ids(channel="C1", include_failed=True) == [old, new]
    assert await ids(channel="D0GENERAL", include_failed=True) == [failed]  # a thread's parent
    assert await ids(model="koala-7b") == [new]
    assert await ids(model=MODEL) == [old]
    assert await ids(min_votes=2) == [new]
    # A filtered context is still whole: the new answer's thread keeps the old turn.
    rows, _ = await rows_of(db, "kto", since=START + timedelta(days=1))
    assert [m["content"] for m in rows[0]["prompt"]] == [
        "old question",
        "old answer",
        "new question",
    ]
    rows, summary = await rows_of(db, "kto", min_votes=2)
    assert summary.skipped == {
        "fewer than 2 votes (--min-votes)": 1,
        "answer failed (see --include-failed)": 1,
    }


# --- opt-outs ----------------------------------------------------------------------------------


async def test_opted_out_users_are_absent_and_their_votes_do_not_count(db: Database) -> None:
    seed = Seed(db)
    theirs = await seed.thread()
    await theirs.ask("my private question", author="UOPT1")
    answer = await theirs.answer("answer to it")
    await theirs.vote(answer, "U2", 1)
    mixed = await seed.thread()
    await mixed.ask("question by someone else", author="U3")
    early = await mixed.answer("early answer")
    await mixed.vote(early, "U2", 1)
    await mixed.ask("a later message of mine", author="UOPT1")
    late = await mixed.answer("late answer")
    await mixed.vote(late, "U2", 1)
    votes = await seed.thread()
    await votes.ask("third question", author="U3")
    outvoted = await votes.answer("voted on by an opted-out user")
    await votes.votes(outvoted, {"UOPT2": -1, "U4": 1})
    only = await votes.answer("only an opted-out vote")
    await votes.votes(only, {"UOPT2": -1})
    await seed.opt_out("slack:UOPT2")  # through the bot; UOPT1 is in the settings

    rows, summary = await rows_of(db, "kto", optouts=("slack:UOPT1",), pseudonym_secret=None)

    text = json.dumps(rows)
    assert "private" not in text and "later message of mine" not in text and "UOPT" not in text
    assert [(r["meta"]["answer_id"], r["label"]) for r in rows] == [(early, True), (outvoted, True)]
    assert rows[1]["meta"]["votes"] == {"up": 1, "down": 0}
    assert summary.skipped == {
        "opted-out user in the thread": 2,
        "votes only from opted-out users": 1,
    }


async def test_a_bare_id_in_settings_opts_out_on_every_platform(db: Database) -> None:
    thread = await Seed(db).thread(platform="discord")
    await thread.ask("hello", author="1234567")
    answer = await thread.answer("hi")
    await thread.vote(answer, "999", 1)

    rows, _ = await rows_of(db, "kto", optouts=("1234567",))

    assert rows == []


# --- pseudonyms --------------------------------------------------------------------------------


async def test_pseudonyms_are_stable_keyed_and_hide_every_raw_id(db: Database) -> None:
    thread = await Seed(db).thread(channel="C0SECRETCH")
    await thread.ask("ping <@U0RAWUSER2|bob> about it", author="U0RAWUSER1")
    answer = await thread.answer("Sure, I will tell <@U0RAWUSER2>.")
    await thread.vote(answer, "U0RAWVOTER", 1)

    for fmt in Format:
        rows, _ = await rows_of(db, fmt.value, pseudonym_secret=SECRET, meta=True)
        again, _ = await rows_of(db, fmt.value, pseudonym_secret=SECRET, meta=True)
        assert rows == again, fmt  # stable across exports
        text = json.dumps(rows)
        for raw in ("U0RAWUSER1", "U0RAWUSER2", "U0RAWVOTER", "C0SECRETCH", "bob"):
            assert raw not in text, (fmt, raw)

    [row], _ = await rows_of(db, "kto", pseudonym_secret=SECRET)
    author = row["meta"]["authors"][0]
    assert author.startswith("u_") and len(author) == 22
    # The mention of the same person carries that person's pseudonym everywhere.
    mentioned = row["prompt"][0]["content"].split("<@")[1].split(">")[0]
    assert row["completion"][0]["content"] == f"Sure, I will tell <@{mentioned}>."
    assert row["meta"]["conversation"].startswith("c_")

    [other_key], _ = await rows_of(db, "kto", pseudonym_secret="another secret")
    assert other_key["meta"]["authors"] != row["meta"]["authors"]

    [unhashed], _ = await rows_of(db, "kto", pseudonym_secret=None)
    assert unhashed["meta"]["authors"] == ["slack:U0RAWUSER1"]
    assert unhashed["prompt"][0]["content"] == "ping <@U0RAWUSER2|bob> about it"


# --- summary -----------------------------------------------------------------------------------


async def test_summary_counts_rows_and_skips_by_reason(db: Database) -> None:
    thread = await Seed(db).thread()
    await thread.ask("Q1")
    a = await thread.answer("A1")
    await thread.votes(a, {"U2": 1})
    await thread.ask("Q2")
    b = await thread.answer("A2")
    await thread.votes(b, {"U2": 1, "U3": -1})
    c = await thread.answer("A2 again", status="interrupted")
    await thread.votes(c, {"U2": 1})

    _, summary = await rows_of(db, "kto")

    assert summary.rows == 1
    assert summary.voted_answers == 3
    assert summary.threads == 1
    assert summary.lines() == [
        "wrote 1 kto row from 3 voted answers in 1 conversation",
        "skipped 2:",
        "          1  net-zero votes",
        "          1  answer interrupted (see --include-failed)",
    ]


async def test_answers_are_written_in_utc(db: Database) -> None:
    thread = await Seed(db).thread()
    await thread.ask("Q")
    answer = await thread.answer("A", at=datetime(2024, 6, 1, 23, 30, tzinfo=UTC))
    await thread.vote(answer, "U2", 1)

    [row], _ = await rows_of(db, "kto")

    assert row["meta"]["created_at"] == "2024-06-01T23:30:00+00:00"
