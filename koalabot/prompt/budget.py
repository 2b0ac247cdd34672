"""Fit a thread into the model's window: whole oldest turns go first, the newest message never.

Token counts come from a TokenCounter (the backend's ``/tokenize``), cached per text, with a
conservative estimate where the server has no tokenizer (reference/tgi-and-koala.md §1.6–1.8).
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import re
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeGuard

from koalabot.errors import (
    BackendError,
    ConfigError,
    PromptTooLongError,
    TokenizerUnavailableError,
)
from koalabot.prompt.templates import Template, Turn, render, render_turn

# --- limits ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Limits:
    """The server's token limits, as its ``/info`` states them."""

    max_input_tokens: int
    max_total_tokens: int

    @classmethod
    def from_info(cls, info: Mapping[str, Any]) -> Limits:
        """Read ``/info``: ``max_input_tokens`` (TGI ≥ 2.1) or ``max_input_length`` (older)."""
        max_input = info.get("max_input_tokens", info.get("max_input_length"))
        max_total = info.get("max_total_tokens")
        if _positive_int(max_input) and _positive_int(max_total):
            return cls(max_input_tokens=max_input, max_total_tokens=max_total)
        raise BackendError(
            "The model server's /info does not state its token limits "
            f"(max_input_tokens={max_input!r}, max_total_tokens={max_total!r})."
        )

    def prompt_budget(self, max_new_tokens: int) -> int:
        """Most prompt tokens TGI accepts when the answer may take ``max_new_tokens``."""
        return min(self.max_input_tokens, self.max_total_tokens - max_new_tokens)


def _positive_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


# --- counting ----------------------------------------------------------------------------------


class TokenCounter(Protocol):
    """Counts tokens the way the model server will.

    ``count(text)`` is the number of tokens TGI counts when ``text`` is a request's ``inputs``,
    special tokens (the BOS it adds) included. A counter that cannot tokenize at all (TGI's
    ``/tokenize`` answering 404 "No fast tokenizer available") raises
    TokenizerUnavailableError; CachedCounter then estimates.
    """

    async def count(self, text: str) -> int:
        """Tokens in ``text`` sent as ``inputs``, BOS included."""
        ...


# What the estimate charges for, by kind of piece (estimate_tokens says why):
_PIECES = re.compile(
    r"(?P<letters>[A-Za-z]+)"
    r"|(?P<digits>[0-9]+)"
    r"|(?P<spaces> {2,})"
    r"|(?P<space> )"
    r"|(?P<ascii>[\x00-\x7f])"
    r"|(?P<other>[^\x00-\x7f])"
)
_UPPER = re.compile(r"[A-Z]")


def estimate_tokens(text: str) -> int:
    """A conservative token count for LLaMA's tokenizer, for servers without ``/tokenize``.

    The rule, checked against LLaMA's real tokenizer on a few thousand samples of English
    prose, Python code, JSON and Markdown (about 1.1-1.6x the real count overall): 2 for the BOS
    and a possible lone "▁"; for a run of ASCII letters, 1/3 per lower-case and 2/3 per
    upper-case letter, rounded up (common words are one token, rare ones split into pieces of
    2-4 letters, capitals into smaller ones); for a number, one per digit plus one, as LLaMA
    splits numbers into digits after a "▁"; a single space nothing (it joins the next word as
    "▁"), a run of n spaces n // 2; any other ASCII character (punctuation, newline, tab) one;
    and a non-ASCII character one per UTF-8 byte, SentencePiece's byte-fallback worst case.
    """
    total = 2
    for match in _PIECES.finditer(text):
        kind, piece = match.lastgroup, match.group()
        if kind == "letters":
            total += -(-(len(piece) + len(_UPPER.findall(piece))) // 3)
        elif kind == "digits":
            total += len(piece) + 1
        elif kind == "spaces":
            total += len(piece) // 2
        elif kind == "ascii":
            total += 1
        elif kind == "other":
            total += len(piece.encode("utf-8"))
    return total


def _digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


async def count_all(counter: TokenCounter, texts: Sequence[str]) -> int:
    """The sum of the counts of ``texts``: cached ones at once, the others concurrently."""
    peek = getattr(counter, "peek", None)
    total, missing = 0, []
    for text in texts:
        known = peek(text) if peek is not None else None
        if known is None:
            missing.append(text)
        else:
            total += known
    if missing:
        total += sum(await asyncio.gather(*(counter.count(text) for text in missing)))
    return total


class CachedCounter:
    """A TokenCounter that remembers counts per text and estimates when it cannot tokenize.

    Counts live in a bounded LRU keyed by a digest of the text, so a long thread is tokenized
    once, not on every answer. When the inner counter raises TokenizerUnavailableError (or
    there is none), ``estimate_tokens`` is used and the server is not asked again for
    ``retry_after`` seconds; estimates are not cached. Other errors propagate.
    """

    def __init__(
        self,
        inner: TokenCounter | None,
        *,
        maxsize: int = 20_000,
        retry_after: float = 300.0,
    ) -> None:
        self.inner = inner
        self.maxsize = maxsize
        self.retry_after = retry_after
        self._cache: OrderedDict[bytes, int] = OrderedDict()
        self._unavailable_until = -math.inf

    @property
    def estimating(self) -> bool:
        """True while counts are estimates (no tokenizer on the server)."""
        return self.inner is None or time.monotonic() < self._unavailable_until

    def peek(self, text: str) -> int | None:
        """The cached count of ``text``, without awaiting anything; None when not cached.

        The engine counts hundreds of already-seen messages per answer: this keeps that free of
        event-loop round trips.
        """
        key = _digest(text)
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
        return cached

    async def count(self, text: str) -> int:
        """Tokens in ``text`` sent as ``inputs``, BOS included (exact, cached, or estimated)."""
        key = _digest(text)
        cached = self._cache.get(key)
        if cached is not None:
            self._cache.move_to_end(key)
            return cached
        if self.inner is None or self.estimating:
            return estimate_tokens(text)
        try:
            tokens = await self.inner.count(text)
        except TokenizerUnavailableError:
            self._unavailable_until = time.monotonic() + self.retry_after
            return estimate_tokens(text)
        self._cache[key] = tokens
        if len(self._cache) > self.maxsize:
            self._cache.popitem(last=False)
        return tokens


# --- fitting -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fitted:
    """The prompt to send and what it took to make it fit."""

    prompt: str
    #: The turns rendered in ``prompt`` (the newest ones).
    turns: list[Turn]
    #: How many of the oldest messages were left out.
    dropped_turns: int
    #: Tokens in ``prompt`` as the counter counts a whole prompt (BOS included).
    prompt_tokens: int


def exchanges(turns: Sequence[Turn]) -> list[int]:
    """Start index of each exchange: a user turn with the answers that follow it.

    History is dropped one exchange at a time, so a prompt never opens with an answer whose
    question is gone. Answers before the first user turn form an exchange of their own.
    """
    return [i for i, turn in enumerate(turns) if i == 0 or turn.role == "user"]


async def fit(
    turns: Sequence[Turn],
    template: Template,
    limits: Limits,
    max_new_tokens: int,
    counter: TokenCounter,
    costs: Sequence[int] | None = None,
    pieces: Sequence[str] | None = None,
) -> Fitted:
    """The prompt for the next answer with as many of the newest exchanges as fit the budget.

    Walks back from the newest user turn (the last one, always kept) and stops at the first
    exchange that no longer fits, so only turns that may be sent are counted (O(kept)) and the
    prompt is rendered once. Each rendered turn is counted on its own, BOS included, which
    overcounts by about one token per turn; the rendered prompt is then counted once, exactly,
    and in the rare case that tokens merged across turns push it over the budget, the oldest
    kept exchange goes too. Raises PromptTooLongError when the newest message alone is too long.

    ``costs`` and ``pieces``, when the caller knows them, are each turn's count as rendered on
    its own (what ``counter`` would say) and the turn rendered (``render_turn``), so a long
    thread's turns are not rendered and looked up again.
    """
    if not turns or turns[-1].role != "user":
        raise ValueError("fit() needs a thread that ends with the user's message")
    budget = limits.prompt_budget(max_new_tokens)
    if budget <= 0:
        raise ConfigError(
            f"invalid setting KOALABOT_MAX_NEW_TOKENS: {max_new_tokens} leaves no room for a "
            f"prompt (the model takes at most {limits.max_total_tokens} tokens in total)"
        )
    starts = exchanges(turns)
    first = len(turns) - 1
    if any(known is not None and len(known) != len(turns) for known in (costs, pieces)):
        raise ValueError("fit() needs one cost and one piece per turn")
    used = await counter.count(template.prepend + template.assistant_prefix)
    used += await _cost(turns, first, first + 1, template, counter, costs)
    end = first
    for start in reversed(starts[:-1]):
        if used > budget:
            break
        cost = await _cost(turns, start, end, template, counter, costs)
        if used + cost > budget:
            break
        used, first, end = used + cost, start, start
    while True:
        kept = list(turns[first:])
        if pieces is None:
            prompt = render(kept, template)
        else:
            prompt = template.prepend + "".join(pieces[first:]) + template.assistant_prefix
        tokens = await counter.count(prompt)
        if tokens <= budget:
            return Fitted(prompt, kept, len(turns) - len(kept), tokens)
        if first == len(turns) - 1:
            raise PromptTooLongError(tokens, budget)
        first = next(s for s in starts if s > first)


async def _cost(
    turns: Sequence[Turn],
    start: int,
    end: int,
    template: Template,
    counter: TokenCounter,
    costs: Sequence[int] | None,
) -> int:
    if costs is not None:
        return sum(costs[start:end])
    return await count_all(counter, [render_turn(turn, template) for turn in turns[start:end]])


__all__ = [
    "CachedCounter",
    "Fitted",
    "Limits",
    "TokenCounter",
    "count_all",
    "estimate_tokens",
    "exchanges",
    "fit",
]
