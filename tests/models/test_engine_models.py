"""Several named models in the engine: each thread sticks to one, 🔄 asks the same one unless
cross-model retries are on, each prompt fits its model's window as that model's tokenizer counts
it, and the platform never learns which one answered unless shown."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from koalabot.cli import main
from koalabot.engine.engine import Engine
from koalabot.events import AnswerResult, Clicked, FeedbackEvent, ThreadKey
from tests.engine.test_engine import ThreadView, make_settings, said
from tests.fakes.tgi import FakeTGI, count_input_tokens


@pytest.fixture
async def servers() -> AsyncIterator[dict[str, FakeTGI]]:
    """Two model servers whose answers and model ids say which one they are."""
    fakes = {
        "koala": FakeTGI(reply=" Answer from server one.", model_id="org/koala-13b"),
        "candidate": FakeTGI(reply=" Answer from server two.", model_id="org/candidate-7b"),
    }
    async with serving(fakes):
        yield fakes


@contextlib.asynccontextmanager
async def serving(fakes: dict[str, FakeTGI]) -> AsyncIterator[None]:
    """The model servers listening, stopped after."""
    for fake in fakes.values():
        await fake.start()
    try:
        yield
    finally:
        for fake in fakes.values():
            await fake.stop()


async def _engine(url: str, servers: dict[str, FakeTGI], **extra: Any) -> Engine:
    models = ",".join(f"{name}={fake.url}" for name, fake in servers.items())
    return await Engine.open(make_settings(url, servers["koala"], models=models, **extra))


SERVER_SAYS = {"koala": "server one", "candidate": "server two"}

#: What a person says, again and again: about 40 tokens for a model that counts one a word, 300
#: for one that counts one a character.
WORDY = "Tell me again why koalas sleep so long and what eucalyptus leaves give them " * 3


@pytest.fixture(params=["words", "characters"], ids=["coarse-first", "fine-first"])
async def unequal(request: pytest.FixtureRequest) -> AsyncIterator[dict[str, FakeTGI]]:
    """Two model servers with the same window whose tokenizers count the same prompt very
    differently: "koala" one token a word, "candidate" one a character; the first named (whose
    tokenizer the engine used to count every thread with) is either."""
    fakes = {
        "koala": FakeTGI(reply=" Answer from server one."),
        "candidate": FakeTGI(reply=" Answer from server two.", per_character=True),
    }
    if request.param == "characters":
        fakes = dict(reversed(fakes.items()))
    async with serving(fakes):
        yield fakes


def _clicked(result: AnswerResult) -> Clicked:
    """The message the answer shows as: where its buttons are clicked."""
    return Clicked("C1", result.message_ids[0])


def _thread(n: int) -> ThreadKey:
    return ThreadKey("slack", "T1", "C1", f"1700000{n:03d}.000100")


async def test_each_thread_sticks_to_one_model_and_the_answer_names_it_in_the_store(
    migrated_database_url: str, servers: dict[str, FakeTGI]
) -> None:
    engine = await _engine(migrated_database_url, servers)
    try:
        seen: set[str] = set()
        for n in range(8):
            models = set()
            for text in ("Hello?", "And then?"):
                result = await engine.handle_message(said(text, _thread(n)), ThreadView())
                assert result.answer_id is not None
                info = await engine.repo.answer(result.answer_id)
                assert info is not None and info.model is not None
                assert SERVER_SAYS[info.model] in result.text
                models.add(info.model)
            assert len(models) == 1  # sticky for the thread's life
            seen |= models
        assert seen == {"koala", "candidate"}  # both models get threads
    finally:
        await engine.close()


async def test_each_model_gets_the_history_its_own_tokenizer_fits_in_its_window(
    migrated_database_url: str, unequal: dict[str, FakeTGI]
) -> None:
    engine = await _engine(migrated_database_url, unequal)
    threads = {engine.models.for_thread(_thread(n)): _thread(n) for n in range(8)}
    assert set(threads) == {"koala", "candidate"}
    last: dict[str, AnswerResult] = {}
    try:
        for model, where in threads.items():
            for n in range(12):
                text, user = f"{n}: {WORDY}", f"U-{model}"  # the rate limit is per person
                result = await engine.handle_message(said(text, where, user), ThreadView())
                assert result.status == "ok", result.notice  # not "too long" for its window
                last[model] = result
    finally:
        await engine.close()
    # One token a word: the whole thread fits, its first message included.
    assert last["koala"].dropped_turns == 0
    assert "0: Tell me" in unequal["koala"].prompts[-1]
    # One token a character: only the newest messages fit, as that server counts them.
    assert last["candidate"].dropped_turns > 0
    prompt = unequal["candidate"].prompts[-1]
    room = engine.settings.max_new_tokens
    assert count_input_tokens(prompt, per_character=True) + room <= 2048
    assert "11: Tell me" in prompt


@pytest.mark.parametrize("cross", [False, True])
async def test_regeneration_asks_the_same_model_unless_cross_model_retry(
    migrated_database_url: str, servers: dict[str, FakeTGI], cross: bool
) -> None:
    engine = await _engine(migrated_database_url, servers, cross_model_retry=cross)
    try:
        first = await engine.handle_message(said("Hello?", _thread(1)), ThreadView())
        assert first.answer_id is not None
        again = await engine.regenerate(first.answer_id, "U1", ThreadView(), _clicked(first))
        assert again.answer_id is not None
        before = await engine.repo.answer(first.answer_id)
        after = await engine.repo.answer(again.answer_id)
        assert before is not None and after is not None
        assert (before.model != after.model) is cross
        assert after.model is not None and SERVER_SAYS[after.model] in again.text
    finally:
        await engine.close()


def _everything_shown(view: ThreadView) -> str:
    return "\n".join([*view.messages.values(), *view.notices])


@pytest.mark.parametrize("show", [False, True])
async def test_no_model_name_reaches_the_platform_unless_the_operator_shows_it(
    migrated_database_url: str, servers: dict[str, FakeTGI], show: bool
) -> None:
    engine = await _engine(migrated_database_url, servers, show_model=show)
    try:
        views = [ThreadView() for _ in range(4)]
        for n, view in enumerate(views):
            result = await engine.handle_message(said("Hello?", _thread(n)), view)
            assert result.answer_id is not None
            await engine.regenerate(result.answer_id, "U1", view, _clicked(result))
        shown = "\n".join(_everything_shown(v) for v in views)
        names = ["koala", "candidate", "koala-13b", "candidate-7b"]
        assert any(name in shown for name in names) is show
    finally:
        await engine.close()


async def test_export_model_keeps_the_answers_of_that_named_model(
    migrated_database_url: str, servers: dict[str, FakeTGI], tmp_path: Path
) -> None:
    engine = await _engine(migrated_database_url, servers)
    try:
        for n in range(6):
            result = await engine.handle_message(said("Hello?", _thread(n)), ThreadView())
            assert result.answer_id is not None
            await engine.handle_feedback(
                FeedbackEvent(
                    "slack",
                    "U2",
                    1,
                    answer_id=result.answer_id,
                    channel="C1",
                    platform_message_id=result.message_ids[0],
                )
            )
    finally:
        await engine.close()
    out = tmp_path / "kto.jsonl"

    args = ["export", "--format", "kto", "--out", str(out), "--model", "candidate"]
    assert await asyncio.to_thread(main, [*args, "--database-url", migrated_database_url]) == 0

    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows and all("server two" in json.dumps(row) for row in rows)
    assert not any("server one" in json.dumps(row) for row in rows)
