"""The terminal chat: an adapter like the others, reading lines from stdin.

Each line waits for its answer before the next is read, so `printf 'hi\\n/good\\n' | koalabot chat`
works in scripts; end of input exits cleanly.

At a terminal (`run_at_tty`) lines are read with `input()` and the readline module (line editing,
arrow keys, history of this session) on the main thread, while the engine runs on an event loop
in a second thread: that way Ctrl-C interrupts readline itself, which restores the terminal, and
the chat ends at once (exit 130) even while an answer streams. History is not written to a file:
it would be a second copy of what people said, out of `koalabot forget`'s reach.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import signal
import sys
import threading
import uuid
from collections.abc import Coroutine
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, TextIO, TypeVar

from koalabot.engine.engine import Engine
from koalabot.engine.streaming import CURSOR, PLACEHOLDER
from koalabot.events import AnswerResult, ChatMessage, FeedbackEvent, Said, ThreadKey

PLATFORM = "terminal"
HELP = (
    "Type a message and press Enter. Commands: /good and /bad vote on the last answer, "
    "/retry asks for another answer, /new starts a new thread, /history shows this thread, "
    "/optout keeps your messages out of training data (/optin undoes it), /quit or Ctrl-D "
    "leaves. After a battle (answers A and B): /a, /b, /tie or /both (both bad) says which "
    "is better."
)
#: A battle's choice by command; /bad stays the 👎 on the last answer (both answers take votes).
CHOICES = {"/a": "a", "/b": "b", "/tie": "tie", "/both": "both_bad"}
WHICH = "[Which answer is better? /a, /b, /tie or /both (both bad)]"


@dataclass
class TerminalSink:
    """Prints an answer as it streams: each edit adds only what is new."""

    out: TextIO
    max_chars: int = 1_000_000
    edit_interval: float = 0.05
    shown: str = ""
    answer_id: int | None = None
    #: The engine's failure notice, printed by the chat after the answer (one line, not two).
    failure: str = ""
    _ids: int = field(default=0)

    async def post(self, text: str) -> str:
        self._ids += 1
        if text != PLACEHOLDER:
            self._show(text)
        return str(self._ids)

    async def edit(self, message_id: str, text: str) -> None:
        text, warned, notice = text.removesuffix(CURSOR).partition("⚠️ ")
        if warned:
            self.failure = notice.strip()
            text = text.rstrip()
            if text and not text.startswith(self.shown):
                text = self.shown  # keep what was already printed
        self._show(text)

    async def finish(self, message_id: str, text: str, answer_id: int) -> None:
        self._show(text)
        self.out.write("\n")
        self.out.flush()
        self.answer_id = answer_id

    async def offer_choice(self, message_id: str, text: str, a_id: int, b_id: int) -> None:
        await self.finish(message_id, text, b_id)
        self.out.write(WHICH + "\n")

    async def notice(self, text: str) -> None:
        if self.shown:
            self.out.write("\n")
        self.out.write(f"[{text}]\n")
        self.out.flush()

    async def thinking(self, on: bool) -> None:
        return None

    def _show(self, text: str) -> None:
        if text.startswith(self.shown):
            self.out.write(text[len(self.shown) :])
        else:
            self.out.write("\n" + text)
        self.shown = text
        self.out.flush()


class TerminalChat:
    """One person at a terminal talking to the engine, thread by thread."""

    def __init__(
        self,
        engine: Engine,
        stdin: TextIO = sys.stdin,
        stdout: TextIO = sys.stdout,
        user: str | None = None,
    ) -> None:
        self.engine = engine
        self.stdin = stdin
        self.out = stdout
        self.user = user or getpass.getuser()
        self.thread = ""
        self.last_answer: int | None = None
        #: The answer /retry asks again for (the last one, finished or failed).
        self.to_retry: int | None = None
        self.last_user_message: int | None = None
        #: The last battle's (answer A, answer B), for /a, /b, /tie and /both.
        self.battle: tuple[int, int] | None = None

    @property
    def where(self) -> ThreadKey:
        return ThreadKey(PLATFORM, "", self.user, self.thread)

    async def start(self, interactive: bool) -> None:
        """Pick up the person's latest thread; at a terminal, say how the chat works."""
        self.thread = await self.engine.latest_thread(PLATFORM, "", self.user) or _new_thread()
        if interactive:
            self._print(f"koalabot chat — {HELP}")

    async def handle_line(self, line: str) -> bool:
        """One line typed or piped in; False means quit."""
        line = line.strip()
        if line.startswith("/"):
            return await self.command(line)
        if line:
            await self.say(line)
        return True

    async def run(self) -> int:
        """Read piped lines until end of input; returns the exit status."""
        await self.start(interactive=False)
        while line := await asyncio.to_thread(self.stdin.readline):
            if not await self.handle_line(line):
                break
        return 0

    async def say(self, text: str) -> AnswerResult:
        """Send one message and print the answer as it streams."""
        msg = ChatMessage(self.where, self.user, text, uuid.uuid4().hex)
        sink = self._sink()
        result = await self.engine.handle_message(msg, sink)
        self._after(result, sink)
        return result

    async def command(self, line: str) -> bool:
        """Run a /command; False means quit."""
        name = line.split()[0].lower()
        if name in ("/quit", "/exit"):
            return False
        if name in ("/good", "/bad"):
            await self._vote(1 if name == "/good" else -1)
        elif name in CHOICES:
            await self._choose(CHOICES[name])
        elif name == "/retry":
            await self._retry()
        elif name == "/new":
            self.thread = _new_thread()
            self.last_answer = self.to_retry = self.battle = None
            self._print("[new thread started]")
        elif name == "/history":
            await self._history()
        elif name in ("/optout", "/optin"):
            opt_out = name == "/optout"
            self._print(f"[{await self.engine.consent(PLATFORM, self.user, opt_out=opt_out)}]")
        else:
            self._print(f"[{HELP}]")
        return True

    def _sink(self) -> TerminalSink:
        return TerminalSink(self.out, edit_interval=min(0.05, self.engine.settings.edit_interval))

    def _after(self, result: AnswerResult, sink: TerminalSink) -> None:
        if result.status == "ok":
            self.last_answer = result.answer_id
            rival = result.rival
            self.battle = None
            if rival is not None and rival.answer_id is not None and result.answer_id:
                self.battle = (result.answer_id, rival.answer_id)
                self.last_answer = rival.answer_id
        self.to_retry = result.answer_id or self.to_retry  # a failed answer is retried too
        if sink.shown and result.status != "ok":
            self.out.write("\n")
        if result.error == "BackendUnavailableError":
            urls = ", ".join(self.engine.backend_urls)
            self._print(
                f"[no model server answers at {urls}: start TGI there "
                "(text-generation-launcher --model-id <koala> --port 8080), or try the chat with "
                "a stand-in: koalabot chat --demo. Your message is saved: type /retry, or send "
                "it again.]"
            )
        elif sink.failure:
            self._print(f"[{sink.failure}]")

    async def _vote(self, rating: int) -> None:
        if self.last_answer is None:
            self._print("[nothing to vote on yet]")
            return
        result = await self.engine.handle_feedback(
            FeedbackEvent(PLATFORM, self.user, rating, answer_id=self.last_answer)
        )
        mark = "👍" if rating > 0 else "👎"
        if result.kept:
            self._print(f"[{mark} kept: recorded once the database is back]")
        else:
            self._print(f"[{mark} recorded]" if result.recorded else "[vote not recorded]")

    async def _choose(self, choice: str) -> None:
        if self.battle is None:
            self._print("[no battle to choose in: /a, /b, /tie and /both follow answers A and B]")
            return
        self._print(f"[{await self.engine.choose(*self.battle, self.user, choice)}]")

    async def _retry(self) -> None:
        answer = self.to_retry or await self.engine.latest_answer(self.where)
        if answer is None:
            self._print("[nothing to retry yet]")
            return
        sink = self._sink()
        result = await self.engine.regenerate(answer, self.user, sink)
        self._after(result, sink)

    async def _history(self) -> None:
        turns = await self.engine.transcript(self.where)
        if not turns:
            self._print("[this thread is empty]")
        for turn in turns:
            self._print(f"{_speaker(turn)}: {turn.content}")

    def _print(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()


def _speaker(turn: Said) -> str:
    if turn.role == "user":
        return "you"
    if turn.side:
        return f"koala (answer {turn.side})"
    return "koala (retry)" if turn.retry else "koala"


def _new_thread() -> str:
    return uuid.uuid4().hex[:12]


T = TypeVar("T")


def run_at_tty(session: AbstractAsyncContextManager[TerminalChat]) -> int:
    """The chat at a terminal: readline on this (main) thread, the engine on a loop of its own.

    Ctrl-D ends the chat (0); Ctrl-C raises KeyboardInterrupt here at once, which the command
    line turns into exit status 130, after cancelling the answer in flight and closing the store.
    """
    with contextlib.suppress(ImportError):  # not on every platform; input() works without it
        import readline  # noqa: F401  (importing it gives input() line editing and history)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=_serve, args=(loop,), name="koalabot-chat", daemon=True)
    thread.start()
    try:
        chat = _on(loop, session.__aenter__())
        try:
            return _read_eval(chat, loop)
        finally:
            _on(loop, session.__aexit__(None, None, None))
    except KeyboardInterrupt:
        sys.stdout.write("\n")
        raise
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)


def _serve(loop: asyncio.AbstractEventLoop) -> None:
    """The chat's loop. It never takes SIGINT: the kernel then hands Ctrl-C to the main thread,
    whose blocking read in readline it must interrupt."""
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    loop.run_forever()


def _read_eval(chat: TerminalChat, loop: asyncio.AbstractEventLoop) -> int:
    _on(loop, chat.start(interactive=True))
    while True:
        try:
            line = input("you> ")
        except EOFError:  # Ctrl-D
            sys.stdout.write("\n")
            return 0
        if not _on(loop, chat.handle_line(line)):
            return 0


def _on(loop: asyncio.AbstractEventLoop, work: Coroutine[Any, Any, T]) -> T:
    """Run ``work`` on the chat's loop and wait; Ctrl-C while waiting cancels it."""
    future = asyncio.run_coroutine_threadsafe(work, loop)
    try:
        return future.result()
    except KeyboardInterrupt:
        future.cancel()
        raise
