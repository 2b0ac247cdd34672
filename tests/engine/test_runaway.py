"""A model server that never stops (it ignores max_new_tokens and never sends EOS) cannot stall
the bot: the answer is cut at koalabot's own cap, with a notice, and the event loop keeps
serving everything else meanwhile. The loop's lag is measured and logged, never asserted on."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

from koalabot.backend.params import AnswerCap, GenerationParams
from koalabot.engine.engine import Engine
from koalabot.errors import AnswerCutOffError
from tests.engine.test_engine import ThreadView, make_settings, said
from tests.fakes.tgi import FakeTGI, Fault, tokenize

log = logging.getLogger(__name__)

MAX_NEW_TOKENS = 64
#: A safety net so a regression fails instead of hanging the suite; not a timing target.
HANG = 60.0


@asynccontextmanager
async def loop_lag(what: str) -> AsyncIterator[list[float]]:
    """Measure how late a 5 ms timer fires while the block runs; log the worst and the median."""
    lags: list[float] = []
    loop = asyncio.get_running_loop()

    async def tick() -> None:
        while True:
            due = loop.time() + 0.005
            await asyncio.sleep(0.005)
            lags.append(loop.time() - due)

    ticker = asyncio.create_task(tick())
    try:
        yield lags
    finally:
        ticker.cancel()
        ordered = sorted(lags) or [0.0]
        log.warning(
            "loop lag during %s: ticks=%d median=%.1f ms max=%.1f ms",
            what,
            len(lags),
            1000 * ordered[len(ordered) // 2],
            1000 * ordered[-1],
        )


async def answer_forever(
    migrated_database_url: str,
    fake_tgi: FakeTGI,
    reply: str,
    max_new_tokens: int = MAX_NEW_TOKENS,
    max_chars: int = 3000,
) -> ThreadView:
    fake_tgi.reply = reply
    fake_tgi.fault = Fault("endless", times=None)
    settings = make_settings(
        migrated_database_url, fake_tgi, max_new_tokens=max_new_tokens, idle_timeout=5.0
    )
    engine = await Engine.open(settings)
    view = ThreadView(max_chars=max_chars)
    try:
        async with loop_lag(f"an endless answer of {reply[:12]!r}…"), asyncio.timeout(HANG):
            result = await engine.handle_message(said("Tell me a story."), view)
    finally:
        await engine.close()
    assert result.status == "failed"
    assert result.error == "AnswerCutOffError"
    assert fake_tgi.requests[-1].parameters["max_new_tokens"] == max_new_tokens
    return view


def shown(view: ThreadView) -> Iterator[str]:
    return iter(view.messages.values())


async def test_a_server_that_never_stops_is_cut_at_the_token_cap_with_a_notice(
    migrated_database_url: str, fake_tgi: FakeTGI
) -> None:
    view = await answer_forever(migrated_database_url, fake_tgi, " All work and no play.")
    cap = AnswerCap.of(GenerationParams(max_new_tokens=MAX_NEW_TOKENS))
    text = "\n".join(shown(view))
    assert text.startswith("All work and no play. All work")
    assert AnswerCutOffError.user_message in text
    tokens = itertools.islice(itertools.cycle(tokenize(" All work and no play.")), cap.tokens)
    assert text.split("\n\n⚠️")[0] == "".join(t.text for t in tokens).strip()


async def test_a_server_that_never_stops_is_cut_at_the_character_cap(
    migrated_database_url: str, fake_tgi: FakeTGI
) -> None:
    word = " " + "a" * 200  # one token of the fake's tokenizer: the characters run out first
    view = await answer_forever(migrated_database_url, fake_tgi, word)
    cap = AnswerCap.of(GenerationParams(max_new_tokens=MAX_NEW_TOKENS))
    answer = "\n".join(shown(view)).split("\n\n⚠️")[0]
    assert answer == (word * cap.chars)[: cap.chars].strip()
    assert AnswerCutOffError.user_message in view.last


async def test_an_endless_code_block_is_cut_and_split_into_closed_fences(
    migrated_database_url: str, fake_tgi: FakeTGI
) -> None:
    reply = " ```python\nfor i in range(10):\n    print(i)\n"
    view = await answer_forever(migrated_database_url, fake_tgi, reply, 1024, max_chars=1000)
    messages = list(shown(view))
    assert len(messages) > 2  # split like any long answer
    assert all(m.count("```") % 2 == 0 for m in messages)
    assert AnswerCutOffError.user_message in messages[-1]
