"""How soon people see the first words: `python -m bench.first_words [--answers N]`.

The real Slack adapter (slack-bolt, Socket Mode) and the real Discord adapter (discord.py) run
against the fake Slack and the fake Discord, over one Engine on SQLite, with a model (the fake
TGI) whose first token takes 150 ms and each next one as long. For each answer it measures the
time from the incoming event to the first answer text a person can see (the first post or edit
whose text is more than the placeholder), and counts the edits the answer cost.

The baseline, measured in the same run: the same answers with the streamer's clock starting at
the placeholder (how answers were shown before: first text on the clock's first beat, one
second after the placeholder), and the model's own time to first token (a streamed request
straight to the server, first byte of the first token). Target: the median time to the first
words at most the model's time to first token plus 50 ms on both platforms, with no more edits
per answer than the baseline. Exit status 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import pkgutil
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

import koalabot.engine
from koalabot.adapter import RunOptions
from koalabot.config import Settings
from koalabot.engine.engine import Engine
from koalabot.engine.streaming import ReplyStreamer
from tests.fakes.discord import FakeDiscord
from tests.fakes.slack import FakeSlack
from tests.fakes.tgi import FakeTGI

FIRST_TOKEN = 0.15
REPLY = "Blue whales are the largest animals known to have lived on Earth."
PLACEHOLDER = "…"
TARGET_MS = 50.0


class PlaceholderClockStreamer(ReplyStreamer):
    """The baseline: the edit clock starts when the placeholder is posted, so the first text
    waits for its first beat (the streamer as it was before the first words showed at once)."""

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        last = loop.time()
        while True:
            await self._changed.wait()
            await self._pause(self.sink.edit_interval - (loop.time() - last))
            if self._closed.is_set():
                return
            self._changed.clear()
            await self._show_progress()
            last = loop.time()


@contextlib.contextmanager
def streamer_class(cls: type[ReplyStreamer]) -> Iterator[None]:
    """Every engine module that builds ReplyStreamers builds ``cls`` instead, for one run."""
    patched: list[tuple[Any, Any]] = []
    for info in pkgutil.iter_modules(koalabot.engine.__path__, "koalabot.engine."):
        module = importlib.import_module(info.name)
        if getattr(module, "ReplyStreamer", None) is ReplyStreamer and module.__name__ != (
            "koalabot.engine.streaming"
        ):
            patched.append((module, module.ReplyStreamer))
            module.ReplyStreamer = cls  # type: ignore[attr-defined]
    try:
        yield
    finally:
        for module, original in patched:
            module.ReplyStreamer = original


@dataclass(frozen=True)
class Answer:
    first_words: float  # seconds from the event to the first visible answer text
    edits: int


def settings_for(tgi: FakeTGI, db: Path, **platform: Any) -> Settings:
    return Settings(
        database_url=f"sqlite:///{db}",
        tgi_url=tgi.url,
        edit_interval=1.0,  # the platforms' own pace
        notice="",
        rate_limit_per_minute=0,  # a hundred people, each asking once: no limit needed
        spool_path="",
        **platform,
    )


@contextlib.asynccontextmanager
async def engine_for(settings: Settings) -> AsyncIterator[Engine]:
    engine = await Engine.open(settings)
    try:
        yield engine
    finally:
        await engine.close()


def first_words(timeline: list[tuple[float, str]], since: float) -> float:
    shown = [at for at, text in timeline if text.strip() not in ("", PLACEHOLDER)]
    return min(shown) - since


async def slack_answers(tgi: FakeTGI, db: Path, n: int, concurrency: int) -> list[Answer]:
    from koalabot_adapters.slack.app import create_adapter

    async with FakeSlack() as slack:
        settings = settings_for(
            tgi,
            db,
            slack_bot_token=slack.bot_token,
            slack_app_token=slack.app_token,
            slack_api_url=slack.api_url,
        )
        async with engine_for(settings) as engine:
            adapter = create_adapter(engine, settings, RunOptions(mode="socket", port=0))
            await adapter.start()
            try:

                async def one(i: int) -> Answer:
                    channel = f"D{i:08d}"
                    start = time.monotonic()
                    asked = await slack.user_posts(REPLY[:20], channel=channel, user=f"U{i:07d}")
                    final = await slack.wait_for(
                        lambda: slack.final_answer(channel, asked.ts), within=30
                    )
                    assert final is not None
                    ts = {m.ts for m in slack.bot_replies(channel, asked.ts)}
                    seen = [(at, text) for at, c, t, text in slack.timeline if t in ts]
                    return Answer(first_words(seen, start), len(seen) - len(ts))

                return await gather_limited(one, n, concurrency)
            finally:
                await adapter.stop()


async def discord_answers(tgi: FakeTGI, db: Path, n: int, concurrency: int) -> list[Answer]:
    from koalabot_adapters.discord.app import DiscordAdapter

    discord = FakeDiscord()
    await discord.start()
    try:
        settings = settings_for(
            tgi,
            db,
            discord_token=discord.token,
            discord_api_url=discord.api_url,
            discord_gateway_url=discord.gateway_url,
        )
        async with engine_for(settings) as engine:
            adapter = DiscordAdapter(engine, settings, RunOptions(), guild_ready_timeout=0.05)
            await adapter.start()
            try:

                async def one(i: int) -> Answer:
                    person = discord.add_user(f"person{i}")
                    channel = discord.dm_channel(person).id
                    start = time.monotonic()
                    await discord.dm(person, REPLY[:20])
                    await discord.wait_for(
                        lambda: any(m.components for m in discord.bot_messages(channel)) or None,
                        within=30,
                    )
                    ids = {m.id for m in discord.bot_messages(channel)}
                    seen = [(at, text) for at, mid, text in discord.timeline if mid in ids]
                    return Answer(first_words(seen, start), len(seen) - len(ids))

                return await gather_limited(one, n, concurrency)
            finally:
                await adapter.stop()
    finally:
        await discord.stop()


async def gather_limited(
    one: Callable[[int], Awaitable[Answer]], n: int, concurrency: int
) -> list[Answer]:
    gate = asyncio.Semaphore(concurrency)

    async def limited(i: int) -> Answer:
        async with gate:
            return await one(i)

    return list(await asyncio.gather(*(limited(i) for i in range(n))))


async def model_first_token(tgi: FakeTGI, n: int) -> list[float]:
    """The model's own time to first token: a streamed request straight to the server."""
    times = []
    body = {"inputs": "USER: hi GPT:", "parameters": {"max_new_tokens": 20}}
    async with aiohttp.ClientSession() as http:
        for _ in range(n):
            start = time.monotonic()
            async with http.post(f"{tgi.url}/generate_stream", json=body) as response:
                async for line in response.content:
                    if line.startswith(b"data:"):
                        times.append(time.monotonic() - start)
                        break
    return times


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(args: argparse.Namespace) -> int:
    tgi = FakeTGI(reply=REPLY, token_delay=FIRST_TOKEN)
    await tgi.start()
    rows: list[tuple[str, str, list[Answer]]] = []
    try:
        model = await model_first_token(tgi, 20)
        with tempfile.TemporaryDirectory() as tmp:
            for platform, answers in (("slack", slack_answers), ("discord", discord_answers)):
                for label, cls in (("placeholder clock", PlaceholderClockStreamer), ("now", None)):
                    db = Path(tmp) / f"{platform}-{label.replace(' ', '-')}.db"
                    with streamer_class(cls or ReplyStreamer):
                        found = await answers(tgi, db, args.answers, args.concurrency)
                    rows.append((platform, label, found))
    finally:
        await tgi.stop()
    return report(model, rows)


def report(model: list[float], rows: list[tuple[str, str, list[Answer]]]) -> int:
    ttft = statistics.median(model) * 1000
    p99 = pct(model, 0.99) * 1000
    print(f"model's own time to first token: median {ttft:.0f} ms, p99 {p99:.0f} ms")
    print(
        f"{'platform':<9}{'streamer':<19}{'answers':>8}{'first words p50':>17}{'p99':>9}"
        f"{'over model p50':>16}{'edits/answer':>14}"
    )
    missed = False
    baseline_edits: dict[str, float] = {}
    for platform, label, answers in rows:
        words = [a.first_words for a in answers]
        edits = statistics.mean(a.edits for a in answers)
        median = statistics.median(words) * 1000
        print(
            f"{platform:<9}{label:<19}{len(answers):>8}{median:>14.0f} ms"
            f"{pct(words, 0.99) * 1000:>6.0f} ms{median - ttft:>13.0f} ms{edits:>14.2f}"
        )
        if label == "placeholder clock":
            baseline_edits[platform] = edits
        else:
            missed |= median - ttft > TARGET_MS or edits > baseline_edits[platform]
    print(
        f"target: first words at most {TARGET_MS:.0f} ms after the model's first token "
        f"(median), edits per answer no more than the placeholder clock's: "
        f"{'MISSED' if missed else 'met'}"
    )
    return 1 if missed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--answers", type=int, default=100, help="answers per platform and mode")
    parser.add_argument("--concurrency", type=int, default=10)
    return asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
