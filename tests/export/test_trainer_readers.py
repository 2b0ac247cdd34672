"""`koala` and `sharegpt` files as the trainers that read them take them, reimplemented here so the
bot's own suite checks them (neither trainer installs beside the bot: EasyLM needs JAX, FastChat
an old transformers).

* EasyLM's ``TextProcessor`` (young-geng/EasyLM, ``EasyLM/data.py``, documented in
  ``docs/dataset.md``; reference/tgi-and-koala.md §4.3), run with ``fields_from_example='fields'``,
  ``prepend_text`` set to the template's opening line and ``add_eos_token=False``: ``fields`` split
  on ``,``; ``[...]`` gives loss mask 0; ``+`` joins subfields with ``subfield_separator`` (a
  space); ``<|bos|>``/``<|eos|>`` are the special ids; ``prepend_text`` goes before the first
  field's text; each field is tokenized on its own.
* FastChat's ``preprocess`` (lm-sys/FastChat, ``fastchat/train/train.py``): ``roles = {"human":
  conv.roles[0], "gpt": conv.roles[1]}``, the first turn dropped when it is not from ``human``,
  then ``assert role == conv.roles[j % 2]`` for every turn; every ``gpt`` turn is trained.
"""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from koalabot.export.options import ExportOptions, Format
from koalabot.export.run import export
from koalabot.prompt.templates import TEMPLATES, Turn, render
from koalabot.store.database import Database
from tests.export.seeded import BAD, BETTER, seed_feedback

pytestmark = pytest.mark.compiled_build

BOS, EOS = "<BOS>", "<EOS>"


def easylm_tokens(
    example: dict[str, Any], prepend_text: str, add_eos_token: bool = False
) -> list[tuple[str, int]]:
    """(token, loss mask) pairs as EasyLM's TextProcessor makes them, with one token per
    character (so masks can be read back as text) and the special ids as ``<BOS>``/``<EOS>``."""
    tokens: list[tuple[str, int]] = []
    for i, field in enumerate(example["fields"].split(",")):
        mask = 1
        if field.startswith("[") and field.endswith("]"):
            field, mask = field[1:-1], 0
        if field == "<|bos|>":
            tokens.append((BOS, mask))
            continue
        if field == "<|eos|>":
            tokens.append((EOS, mask))
            continue
        text = " ".join(example[subfield] for subfield in field.split("+"))
        if i == 0:
            text = prepend_text + text
        tokens += [(char, mask) for char in text]
    if add_eos_token:
        tokens.append((EOS, 1))
    return tokens


def detokenize(tokens: list[tuple[str, int]]) -> str:
    return "".join("</s>" if token == EOS else token for token, _ in tokens)


def fastchat_conversation(source: list[dict[str, str]]) -> list[tuple[str, str]]:
    """The (role, text) turns FastChat's preprocess builds, raising where it asserts."""
    roles = {"human": "USER", "gpt": "ASSISTANT"}
    if roles[source[0]["from"]] != "USER":
        source = source[1:]
    turns = []
    for j, sentence in enumerate(source):
        role = roles[sentence["from"]]
        assert role == ("USER", "ASSISTANT")[j % 2], "roles must alternate"
        turns.append((role, sentence["value"]))
    return turns


async def rows_of(db: Database, fmt: str) -> list[dict[str, Any]]:
    out = io.StringIO()
    await export(db, ExportOptions(Format(fmt), pseudonym_secret=None), out)
    return [json.loads(line) for line in out.getvalue().splitlines()]


async def test_easylm_reads_koala_rows_as_the_served_prompt_and_trains_only_the_answer(
    db: Database,
) -> None:
    await seed_feedback(db)
    koala = TEMPLATES["koala"]

    rows = await rows_of(db, "koala")

    assert rows
    for row in rows:
        tokens = easylm_tokens(row, prepend_text=koala.prepend)
        masked = detokenize([(t, mask) for t, mask in tokens if not mask])
        trained = detokenize([(t, mask) for t, mask in tokens if mask])
        fields = row["fields"].split(",")
        rated = next(f for f in fields if not f.startswith("[") and f != "<|eos|>")
        assert trained == row[rated] + "</s>"  # only the rated answer and its EOS
        if rated.startswith("gpt_bad"):
            assert masked.endswith(" An Unhelpful Answer:")
            continue
        # The model learns from what the bot sends it: the served prompt, byte for byte.
        turns = [
            Turn("user" if key.startswith("human_") else "assistant", row[key])
            for key in row
            if key.startswith(("human_", "gpt_")) and key != rated
        ]
        assert masked == render(turns, koala)


async def test_fastchat_reads_sharegpt_rows_and_trains_liked_answers_once(db: Database) -> None:
    await seed_feedback(db)

    rows = await rows_of(db, "sharegpt")

    trained: list[str] = []
    for row in rows:
        assert set(row) == {"id", "conversations", "meta"}
        turns = fastchat_conversation(row["conversations"])
        assert turns[0][0] == "USER" and turns[-1][0] == "ASSISTANT"
        assert len(turns) == len(row["conversations"])  # nothing dropped by FastChat
        trained += [f"{row['id']}:{text}" for role, text in turns if role == "ASSISTANT"]
    answers = [t.split(":", 1)[1] for t in trained]
    assert BAD not in answers
    assert answers.count(BETTER) == 4  # the liked one; its identical disliked twin never
    assert len({row["id"] for row in rows}) == len(rows)
    # Each liked answer once: 4 threads x (greeting, better, and eucalyptus when liked).
    assert len(answers) == 4 * 2 + 2
