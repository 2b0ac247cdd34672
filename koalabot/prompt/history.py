"""From the stored thread to the prompt for its next answer.

Pages back from the newest message and stops once the budget is surely spent, so a long thread
is never loaded whole; remembers each stored message's token count by id, so the history of a
thread is counted once, not again for every answer.

What is remembered by message id is trusted only while it is surely the same message: it is
forgotten whenever the store has seen another process commit (``koalabot forget``, say), and each
entry is used only for a message of the same role and the very same text (equal strings: usually
the same object, read from the store's kept tail, so the check costs nothing). A deleted row's id
is not given out again (AUTOINCREMENT), but the cache does not rely on it.

The prompt stage imports nothing of the store: it says here, as small Protocols, what it reads
(`ThreadReader`, `ThreadPage`, `StoredTurn`), and the store's `Repository`, `Page` and
`StoredMessage` fit them as they are. The trade-off is that a field renamed in the store shows up
as a type error at the engine, which passes the repository in, rather than here.
"""

from __future__ import annotations

import asyncio
import math
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from koalabot.events import has_words
from koalabot.prompt.budget import CachedCounter, Limits, fit
from koalabot.prompt.templates import Role, Template, Turn, render_turn

#: Messages read at first from a thread not seen before, newest first.
HISTORY_PAGE = 128
#: Most messages read in one query.
MAX_PAGE = 512
#: Messages a thread may have gained since its last answer's prompt was built.
MARGIN = 8
#: Stored messages remembered as turns with their token counts (a few megabytes at most).
REMEMBERED = 10_000


class StoredTurn(Protocol):
    """A stored message as the prompt reads it (the store's ``StoredMessage`` is one)."""

    @property
    def id(self) -> int: ...
    @property
    def role(self) -> str: ...  # "user" or "assistant"
    @property
    def text(self) -> str: ...
    @property
    def parent_id(self) -> int | None: ...  # the user message an answer answers
    @property
    def status(self) -> str: ...  # only "ok" answers are shown to the model again
    @property
    def side(self) -> str | None: ...  # "A" or "B": an answer of a side-by-side battle


class ThreadPage(Protocol):
    """Some of a thread's messages, newest first, and how many are older still."""

    @property
    def messages(self) -> Sequence[StoredTurn]: ...
    @property
    def older(self) -> int: ...


class ThreadReader(Protocol):
    """Where the thread is read from, a page at a time (the store's ``Repository``)."""

    @property
    def commits_elsewhere(self) -> int: ...  # changes once another process has written

    async def history_page(
        self, conversation_id: int, *, before_id: int | None = None, limit: int = ...
    ) -> ThreadPage: ...


#: The answers of a thread that lost their side-by-side battle (asked only of a thread that
#: holds a battle: most never do, and then no one asks).
LostAnswers = Callable[[], Awaitable[frozenset[int]]]


@dataclass(frozen=True)
class ThreadPrompt:
    """The prompt for an answer and what fitting it took."""

    prompt: str
    #: Oldest messages of the thread left out (the ones counted and the ones never read).
    dropped: int
    #: Tokens in ``prompt``, BOS included.
    tokens: int


class HistoryPrompter:
    """Builds the prompt that answers one stored message from the thread before it.

    Reads about as many messages as the last prompt of the thread took (``first_page``), so a
    long thread usually costs one query; more pages follow, sized by what the budget has left.
    """

    def __init__(self, repo: ThreadReader, counter: CachedCounter, template: Template) -> None:
        self.repo = repo
        self.counter = counter
        self.template = template
        # message id -> what it is as a turn; exact token counts only
        self._known: dict[int, _Seen] = {}
        self._commits_elsewhere = repo.commits_elsewhere
        # conversation id -> messages its last prompt read up to the end of the budget
        self._spans: OrderedDict[int, int] = OrderedDict()

    def first_page(self, conversation_id: int) -> int:
        """How many of the thread's newest messages to read first."""
        span = self._spans.get(conversation_id)
        return HISTORY_PAGE if span is None else min(MAX_PAGE, span + MARGIN)

    async def build(
        self,
        conversation_id: int,
        upto_id: int,
        limits: Limits,
        max_new_tokens: int,
        first: ThreadPage | None = None,
        lost: LostAnswers | None = None,
    ) -> ThreadPrompt:
        """The prompt for answering message ``upto_id``, from as much of the thread as fits.

        ``first`` is the thread's newest page when the caller has read it already; ``lost``
        says which battle answers people passed over.
        """
        budget = limits.prompt_budget(max_new_tokens)
        loaded: list[StoredTurn] = []
        seen: dict[int, _Seen] = {}
        tokens, read, older, span = 0, 0, 1, 0
        page, before, limit = first, None, self.first_page(conversation_id)
        while older and tokens <= budget:
            if page is None:
                page = await self.repo.history_page(conversation_id, before_id=before, limit=limit)
            messages, older, page = page.messages, page.older, None
            if not messages:
                break
            before = messages[-1].id
            positions, visible = _visible(messages, upto_id)
            await self._see(visible, seen)
            for position, m in zip(positions, visible, strict=True):
                tokens += seen[m.id].tokens
                if tokens > budget and not span:
                    span = read + position + 1
            loaded.extend(visible)
            read += len(messages)
            limit = _next_page(budget - tokens, tokens, read)
        self._remember_span(conversation_id, span or read)
        passed_over = frozenset[int]()
        if lost is not None and any(m.side is not None for m in loaded):
            passed_over = await lost()
        chosen = _turns(loaded, upto_id, seen, passed_over)
        unseen = older + _cut_off(loaded) if tokens > budget else 0
        fitted = await fit(
            [c.turn for c in chosen],
            self.template,
            limits,
            max_new_tokens,
            self.counter,
            costs=[c.tokens for c in chosen],
            pieces=[c.piece for c in chosen],
        )
        return ThreadPrompt(fitted.prompt, fitted.dropped_turns + unseen, fitted.prompt_tokens)

    async def _see(self, messages: Sequence[StoredTurn], seen: dict[int, _Seen]) -> None:
        """Put each message's turn, rendered turn and its tokens in ``seen``."""
        missing: list[tuple[StoredTurn, Turn, str]] = []
        known = self._known_now()
        for m in messages:
            entry = known.get(m.id)
            role: Role = "user" if m.role == "user" else "assistant"
            if entry is not None and entry.turn.content == m.text and entry.turn.role == role:
                seen[m.id] = entry
            else:
                turn = Turn(role, m.text)
                missing.append((m, turn, render_turn(turn, self.template)))
        if missing:
            counts = await asyncio.gather(*(self.counter.count(piece) for *_, piece in missing))
            for (m, turn, piece), count in zip(missing, counts, strict=True):
                seen[m.id] = entry = _Seen(count, turn, piece)
                if self.counter.peek(piece) is not None:  # exact, not an estimate
                    self._remember(m.id, entry)

    def _known_now(self) -> dict[int, _Seen]:
        """The remembered turns, emptied first if another process has written since."""
        commits = self.repo.commits_elsewhere
        if commits != self._commits_elsewhere:
            self._commits_elsewhere = commits
            self._known.clear()
        return self._known

    def _remember(self, message_id: int, entry: _Seen) -> None:
        self._known[message_id] = entry
        if len(self._known) > REMEMBERED:  # the first remembered go first
            del self._known[next(iter(self._known))]

    def _remember_span(self, conversation_id: int, span: int) -> None:
        self._spans[conversation_id] = span
        self._spans.move_to_end(conversation_id)
        if len(self._spans) > REMEMBERED:
            self._spans.popitem(last=False)


class _Seen(NamedTuple):
    """A stored message as a turn of the prompt (a tuple: hundreds are looked at per answer)."""

    tokens: int
    turn: Turn  # its role and text: another text under the same id is counted again
    piece: str  # the turn rendered


def _next_page(left: int, tokens: int, read: int) -> int:
    """Messages to read next: enough, at the thread's tokens per message so far, to spend what
    is left of the budget, with room to spare."""
    if left < 0:
        return 0
    per_message = max(1.0, tokens / max(read, 1))
    return max(16, min(MAX_PAGE, math.ceil(left / per_message * 1.5) + MARGIN))


def _visible(
    newest_first: Sequence[StoredTurn], upto_id: int
) -> tuple[list[int], list[StoredTurn]]:
    """The messages that go into the prompt for ``upto_id``, with their places in the list: the
    user's up to that one that say something, and the answers to them that succeeded."""
    positions: list[int] = []
    visible: list[StoredTurn] = []
    for position, m in enumerate(newest_first):
        if m.role == "user":
            if m.id > upto_id or not has_words(m.text):
                continue
        elif m.status != "ok" or m.parent_id is None or m.parent_id >= upto_id:
            continue
        positions.append(position)
        visible.append(m)
    return positions, visible


def _cut_off(newest_first: Sequence[StoredTurn]) -> int:
    """Answers read whose question was not (the last page ended between them): left out like
    the messages never read, one per question."""
    questions = {m.id for m in newest_first if m.role == "user"}
    oldest = min(questions, default=math.inf)
    return len(
        {
            m.parent_id
            for m in newest_first
            if m.parent_id is not None and m.parent_id not in questions and m.parent_id < oldest
        }
    )


def _turns(
    newest_first: list[StoredTurn], upto_id: int, seen: dict[int, _Seen], lost: frozenset[int]
) -> list[_Seen]:
    """Chronological turns: each user message followed by the successful answer its thread
    continues with: after a battle, its first side that did not lose (A, or B once people
    preferred it), else the latest (a 🔄 replaces the answer before it)."""
    answers: dict[int, StoredTurn] = {}
    sides: dict[int, StoredTurn] = {}
    users: list[StoredTurn] = []
    for message in newest_first:
        if message.role == "user":
            users.append(message)
        elif message.parent_id is None or message.id in lost:
            continue
        elif message.side is not None:
            sides[message.parent_id] = message  # newest first: the last seen is the first
        elif message.parent_id not in answers:
            answers[message.parent_id] = message
    answers |= sides
    chosen: list[_Seen] = []
    for user in reversed(users):
        chosen.append(seen[user.id])
        answer = answers.get(user.id)
        if answer is not None and user.id != upto_id:
            chosen.append(seen[answer.id])
    return chosen


__all__ = [
    "HISTORY_PAGE",
    "HistoryPrompter",
    "LostAnswers",
    "StoredTurn",
    "ThreadPage",
    "ThreadPrompt",
    "ThreadReader",
]
