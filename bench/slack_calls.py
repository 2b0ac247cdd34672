"""Slack API calls per answer, streaming API vs chat.update: `python -m bench.slack_calls`.

The same answers (``--chars`` characters, written at ``--chars-per-second``, in tokens of four
characters) are shown through the Slack adapter's sinks against the fake Slack over its socket:
once on the streaming path (chat.startStream / appendStream / stopStream, SlackStreamingSink)
and once on the edit path (chat.postMessage / chat.update, SlackReplySink), both driven by the
engine's own ReplyStreamer with a one-second edit clock. ``--speedup`` runs the clock and the
model that many times faster (the counts are the same; the run is shorter). Printed per path:
calls per answer in all and by method (mean over ``--answers``), and the answer text those calls
carried (chat.update resends the whole message each time; appendStream only what is new). The
baseline is the edit path of the same run.

Only the sinks and the fake Slack run here (no slack-bolt, no store, no model server): the
figure is what the adapter asks of Slack, not what the rest of the bot costs.
"""

from __future__ import annotations

import argparse
import asyncio
from collections import Counter
from collections.abc import Callable

from slack_sdk.web.async_client import AsyncWebClient

from koalabot.engine.streaming import ReplyStreamer
from koalabot.events import ReplySink
from koalabot_adapters.slack.sink import SlackReplySink
from koalabot_adapters.slack.streamsink import SlackStreamingSink, StreamingChoice
from tests.fakes.slack import FakeSlack

TOKEN_CHARS = 4
WORDS = "Koalas sleep most of the day in eucalyptus trees and eat their leaves at night. "


def answer_text(chars: int) -> str:
    """An answer of ``chars`` characters in paragraphs of about 400."""
    sentences = (WORDS * (chars // len(WORDS) + 1))[:chars]
    return "\n\n".join(sentences[i : i + 400] for i in range(0, chars, 400))


async def one_answer(sink: ReplySink, text: str, token_delay: float) -> None:
    """Show ``text`` as the engine does: placeholder, a token at a time, then the final text."""
    streamer = ReplyStreamer(sink)
    await streamer.start()
    for end in range(TOKEN_CHARS, len(text) + TOKEN_CHARS, TOKEN_CHARS):
        await asyncio.sleep(token_delay)
        streamer.update(text[:end].strip())
    await streamer.finish(text, answer_id=1)


SinkFactory = Callable[[AsyncWebClient, str], ReplySink]


async def run_path(
    slack: FakeSlack, make_sink: SinkFactory, args: argparse.Namespace
) -> tuple[Counter[str], int]:
    """Calls by method over all answers, and the characters of text and blocks they carried."""
    client = AsyncWebClient(token=slack.bot_token, base_url=slack.api_url)
    text = answer_text(args.chars)
    delay = TOKEN_CHARS / args.chars_per_second / args.speedup
    before = len(slack.calls)
    roots = [await slack.user_posts("about koalas?", deliver=False) for _ in range(args.answers)]
    await asyncio.gather(*(one_answer(make_sink(client, r.ts), text, delay) for r in roots))
    calls = slack.calls[before:]
    sent = sum(len(str(c.args.get(k) or "")) for c in calls for k in ("text", "markdown_text"))
    return Counter(c.method for c in calls), sent


def report(name: str, calls: Counter[str], sent: int, answers: int) -> None:
    by_method = ", ".join(f"{m} {n / answers:.1f}" for m, n in sorted(calls.items()))
    total = sum(calls.values()) / answers
    chars = f"{sent // answers:,} characters sent"
    print(f"{name:<12} {total:5.1f} calls/answer ({by_method}); {chars}")


async def main(args: argparse.Namespace) -> None:
    interval = 1.0 / args.speedup
    print(
        f"{args.answers} answers of {args.chars:,} characters at {args.chars_per_second} "
        f"characters/s, one-second edit clock (run {args.speedup:g}x faster)"
    )
    async with FakeSlack(echo_bot_events=False) as slack:

        def streaming(client: AsyncWebClient, thread: str) -> ReplySink:
            edits = SlackReplySink(client, "C0GENERAL", thread, edit_interval=interval)
            choice = StreamingChoice("on")
            return SlackStreamingSink(
                edits, choice, recipient_team_id=slack.team_id, recipient_user_id="U0ALICE"
            )

        def editing(client: AsyncWebClient, thread: str) -> ReplySink:
            return SlackReplySink(client, "C0GENERAL", thread, edit_interval=interval)

        for name, make in (("streaming", streaming), ("chat.update", editing)):
            calls, sent = await run_path(slack, make, args)
            report(name, calls, sent, args.answers)


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--answers", type=int, default=10)
    parser.add_argument("--chars", type=int, default=2_000)
    parser.add_argument("--chars-per-second", type=float, default=200.0)
    parser.add_argument("--speedup", type=float, default=10.0)
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse()))
