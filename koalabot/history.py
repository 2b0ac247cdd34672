"""From the stored thread to the prompt for its next answer.

Pages back from the newest message and stops once the budget is surely spent, so a long thread
is never loaded whole; remembers each stored message's token count by id, so the history of a
thread is counted once, not again for every answer.
"""

from __future__ import annotations

import asyncio
import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from koalabot.budget import CachedCounter, Limits, fit
from koalabot.events import has_words
from koalabot.prompt import Template, Turn, render_turn
from koalabot.store.repository import Page, Repository, StoredMessage

#: Messages read at first from a thread not seen before, newest first.
HISTORY_PAGE = 128
#: Most messages read in one query.
MAX_PAGE = 512
#: Messages a thread may have gained since its last answer's prompt was built.
MARGIN = 8
#: Stored messages whose token counts are remembered (a few megabytes at most).
REMEMBERED = 20_000


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

    def __init__(self, repo: Repository, counter: CachedCounter, template: Template) -> None:
        self.repo = repo
        self.counter = counter
        self.template = template
        # message id -> (length of its text, tokens of its rendered turn); exact counts only
        self._known: OrderedDict[int, tuple[int, int]] = OrderedDict()
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
        first: Page | None = None,
    ) -> ThreadPrompt:
        """The prompt for answering message ``upto_id``, from as much of the thread as fits.

        ``first`` is the thread's newest page when the caller has read it already.
        """
        budget = limits.prompt_budget(max_new_tokens)
        loaded: list[StoredMessage] = []
        costs: dict[int, int] = {}
        tokens, read, older, span = 0, 0, 1, 0
        page, before, limit = first, None, self.first_page(conversation_id)
        while older and tokens <= budget:
            if page is None:
                page = await self.repo.history_page(conversation_id, before_id=before, limit=limit)
            messages, older, page = page.messages, page.older, None
            if not messages:
                break
            before = messages[-1].id
            visible = [m for m in messages if _visible(m, upto_id)]
            await self._count(visible, costs)
            for position, m in enumerate(messages):
                tokens += costs.get(m.id, 0)
                if tokens > budget and not span:
                    span = read + position + 1
            loaded.extend(visible)
            read += len(messages)
            limit = _next_page(budget - tokens, tokens, read)
        self._remember_span(conversation_id, span or read)
        turns, turn_costs = _turns(loaded, upto_id, costs)
        unseen = older if tokens > budget else 0
        fitted = await fit(turns, self.template, limits, max_new_tokens, self.counter, turn_costs)
        return ThreadPrompt(fitted.prompt, fitted.dropped_turns + unseen, fitted.prompt_tokens)

    async def _count(self, messages: Sequence[StoredMessage], costs: dict[int, int]) -> None:
        """Put the tokens of each message's rendered turn in ``costs``."""
        missing: list[tuple[StoredMessage, str]] = []
        for m in messages:
            known = self._known.get(m.id)
            if known is not None and known[0] == len(m.text):
                self._known.move_to_end(m.id)
                costs[m.id] = known[1]
            else:
                missing.append((m, self._render(m)))
        if missing:
            counts = await asyncio.gather(*(self.counter.count(text) for _, text in missing))
            for (m, text), count in zip(missing, counts, strict=True):
                costs[m.id] = count
                if self.counter.peek(text) is not None:  # exact, not an estimate
                    self._remember(m, count)

    def _remember(self, message: StoredMessage, tokens: int) -> None:
        self._known[message.id] = (len(message.text), tokens)
        if len(self._known) > REMEMBERED:
            self._known.popitem(last=False)

    def _remember_span(self, conversation_id: int, span: int) -> None:
        self._spans[conversation_id] = span
        self._spans.move_to_end(conversation_id)
        if len(self._spans) > REMEMBERED:
            self._spans.popitem(last=False)

    def _render(self, message: StoredMessage) -> str:
        turn = Turn("user" if message.role == "user" else "assistant", message.text)
        return render_turn(turn, self.template)


def _next_page(left: int, tokens: int, read: int) -> int:
    """Messages to read next: enough, at the thread's tokens per message so far, to spend what
    is left of the budget, with room to spare."""
    if left < 0:
        return 0
    per_message = max(1.0, tokens / max(read, 1))
    return max(16, min(MAX_PAGE, math.ceil(left / per_message * 1.5) + MARGIN))


def _visible(message: StoredMessage, upto_id: int) -> bool:
    if message.role == "user":
        return message.id <= upto_id and has_words(message.text)
    return message.status == "ok" and message.parent_id is not None and message.parent_id < upto_id


def _turns(
    newest_first: list[StoredMessage], upto_id: int, costs: dict[int, int]
) -> tuple[list[Turn], list[int]]:
    """Chronological turns, each user message followed by its latest successful answer, and
    the cost of each."""
    answers: dict[int, StoredMessage] = {}
    users: list[StoredMessage] = []
    for message in newest_first:
        if message.role == "user":
            users.append(message)
        elif message.parent_id is not None and message.parent_id not in answers:
            answers[message.parent_id] = message  # newest first: the first seen is the latest
    turns: list[Turn] = []
    turn_costs: list[int] = []
    for user in reversed(users):
        turns.append(Turn("user", user.text))
        turn_costs.append(costs[user.id])
        answer = answers.get(user.id)
        if answer is not None and user.id != upto_id:
            turns.append(Turn("assistant", answer.text))
            turn_costs.append(costs[answer.id])
    return turns, turn_costs


__all__ = ["HISTORY_PAGE", "HistoryPrompter", "ThreadPrompt"]
