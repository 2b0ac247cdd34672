"""Many people at once: `python -m bench.load [--conversations N] [--answer-seconds S]`.

1,000 conversations ask one question each, all at the same moment, through the real Engine on
SQLite, against the fake TGI running in another process and taking 2 s per answer (20 tokens,
0.1 s apart). Each conversation's replies go to a platform-like sink: every call takes a few
milliseconds, and the engine's streamer edits a message at most once per second (Slack's and
Discord's pace), so this is the load a busy Slack workspace puts on one process, without the
Slack fake's own cost (1,000 concurrent slack-bolt requests would measure the fake, not us).

Reported: answers completed, lost (no final answer) and duplicated (more than one stored or shown
per question), wall time against the 2 s the model takes (the baseline: the floor of any answer),
answer latency p50/p99, platform edit calls per answer, and peak RSS of this process next to its
RSS before the load (the same run's baseline). Targets: peak RSS at most 300 MB; no answer lost
or duplicated. Exit status 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import resource
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from koalabot.config import load_settings
from koalabot.engine.engine import Engine
from koalabot.events import AnswerResult, ChatMessage, ThreadKey

ROOT = Path(__file__).resolve().parent.parent
TOKENS = 20  # per answer, the end-of-sequence token included
RSS_TARGET_MB = 300.0
API_CALL_SECONDS = 0.005  # what one platform API call costs the sink


@dataclass
class PlatformSink:
    """One thread on a platform: each call takes a moment; the streamer paces the edits."""

    max_chars: int = 3000
    edit_interval: float = 1.0
    posts: int = 0
    edits: int = 0
    finals: list[tuple[int, str]] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)

    async def post(self, text: str) -> str:
        await asyncio.sleep(API_CALL_SECONDS)
        self.posts += 1
        return str(self.posts)

    async def edit(self, message_id: str, text: str) -> None:
        await asyncio.sleep(API_CALL_SECONDS)
        self.edits += 1

    async def finish(self, message_id: str, text: str, answer_id: int) -> None:
        await asyncio.sleep(API_CALL_SECONDS)
        self.finals.append((answer_id, text))

    async def notice(self, text: str) -> None:
        self.notices.append(text)

    async def thinking(self, on: bool) -> None:
        return None


@dataclass
class Outcome:
    result: AnswerResult
    sink: PlatformSink
    seconds: float


def rss_mb() -> float:
    """Resident memory of this process now (Linux /proc)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * resource.getpagesize() / 2**20


def peak_rss_mb() -> float:
    """The most resident memory this process ever had (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def fake_tgi_process(token_delay: float, port: int) -> Iterator[str]:
    """The fake TGI in its own process, taking ``token_delay`` per token, with room for every
    stream at once (its default refuses more than 128 as `overloaded`, as TGI does)."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.load",
            "--serve-tgi",
            str(port),
            "--token-delay",
            str(token_delay),
        ],
        cwd=ROOT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("the fake TGI did not start")
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


async def serve_tgi(port: int, token_delay: float) -> None:
    """The other process: a FakeTGI answering TOKENS tokens to every question."""
    from tests.fakes.tgi import FakeTGI

    reply = " " + " ".join(["koala"] * (TOKENS - 1))
    async with FakeTGI(
        reply=reply, token_delay=token_delay, port=port, max_concurrent_requests=100_000
    ):
        await asyncio.Event().wait()


async def converse(engine: Engine, n: int, start: asyncio.Event) -> Outcome:
    where = ThreadKey("slack", "TLOAD", f"C{n % 50:04d}", f"1700000000.{n:06d}")
    msg = ChatMessage(
        where,
        f"U{n:05d}",
        f"Question number {n}: what do koalas eat?",
        where.thread,
        dedupe_keys=(f"slack:msg:{where.channel}:{where.thread}",),
    )
    sink = PlatformSink()
    await start.wait()
    began = time.monotonic()
    result = await engine.handle_message(msg, sink)
    return Outcome(result, sink, time.monotonic() - began)


def stored_answers(db: Path) -> tuple[int, int]:
    """(questions with exactly one ok answer, questions with more than one answer)."""
    with contextlib.closing(sqlite3.connect(db)) as conn:
        counts = Counter(
            parent
            for (parent,) in conn.execute(
                "SELECT parent_id FROM messages WHERE role = 'assistant' AND status = 'ok'"
            )
        )
        every = Counter(
            parent
            for (parent,) in conn.execute("SELECT parent_id FROM messages WHERE role = 'assistant'")
        )
    return sum(1 for c in counts.values() if c == 1), sum(1 for c in every.values() if c > 1)


async def run(args: argparse.Namespace) -> int:
    token_delay = args.answer_seconds / TOKENS
    with tempfile.TemporaryDirectory() as tmp, fake_tgi_process(token_delay, free_port()) as tgi:
        db = Path(tmp) / "load.db"
        settings = load_settings(
            None,
            database_url=f"sqlite:///{db}",
            tgi_url=tgi,
            rate_limit_per_minute=0,
            notice="",
            max_new_tokens=64,
            first_token_timeout=120.0,
            idle_timeout=60.0,
        )
        engine = await Engine.open(settings)
        try:
            await engine.handle_message(  # warm up: /info, the pools, the first connection
                ChatMessage(ThreadKey("slack", "TLOAD", "CWARM", "0.1"), "U0", "hi", "0.1"),
                PlatformSink(),
            )
            idle = rss_mb()
            start = asyncio.Event()
            tasks = [
                asyncio.create_task(converse(engine, n, start)) for n in range(args.conversations)
            ]
            await asyncio.sleep(0)
            began = time.monotonic()
            start.set()
            outcomes = await asyncio.gather(*tasks)
            wall = time.monotonic() - began
        finally:
            await engine.close()
        peak = peak_rss_mb()
        single, doubled = stored_answers(db)

    ok = [o for o in outcomes if o.result.status == "ok" and len(o.sink.finals) == 1]
    shown_twice = [o for o in outcomes if len(o.sink.finals) > 1 or o.sink.posts > 1]
    lost = args.conversations - len(ok)
    duplicated = len(shown_twice) + doubled
    latencies = sorted(o.seconds for o in outcomes)
    edits = [o.sink.edits for o in ok]
    statuses = Counter(o.result.status for o in outcomes)

    print(
        f"{args.conversations} conversations at once, the model taking {args.answer_seconds:.1f} s "
        f"an answer ({TOKENS} tokens), edits at most every {PlatformSink.edit_interval:.0f} s"
    )
    print(f"  answered            {len(ok)}  (statuses: {dict(statuses)})")
    print(f"  stored once         {single - 1}")  # the warm-up question is stored too
    print(f"  lost / duplicated   {lost} / {duplicated}")
    print(
        f"  wall time           {wall:.1f} s   "
        f"(baseline: one answer takes {args.answer_seconds:.1f} s)"
    )
    print(
        f"  answer latency      p50 {pct(latencies, 0.5):.2f} s   p99 {pct(latencies, 0.99):.2f} s"
    )
    if edits:
        print(
            f"  edit calls/answer   mean {statistics.mean(edits):.2f}   max {max(edits)}"
            "   (plus the final edit with the buttons)"
        )
    print(f"  RSS                 peak {peak:.0f} MB   (baseline before the load: {idle:.0f} MB)")
    met = peak <= RSS_TARGET_MB and lost == 0 and duplicated == 0 and single - 1 == len(ok)
    print(
        f"target (peak RSS <= {RSS_TARGET_MB:.0f} MB, nothing lost or duplicated): "
        + ("met" if met else "MISSED")
    )
    return 0 if met else 1


def pct(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))] if values else 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--conversations", type=int, default=1000)
    parser.add_argument("--answer-seconds", type=float, default=2.0, help="the model's time")
    parser.add_argument("--serve-tgi", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--token-delay", type=float, default=0.1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_tgi is not None:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve_tgi(args.serve_tgi, args.token_delay))
        return 0
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
