"""Thumbs votes → training data: one JSON row per line, in the format a trainer reads.

Formats (reference/tgi-and-koala.md §4–5):

* ``koala`` — EasyLM rows as Koala's data pipeline built them (``marker_*``, ``human_N``,
  ``gpt_N`` or ``gpt_bad_N``, ``fields``): a liked answer under ``GPT:``, a disliked one under
  ``An Unhelpful Answer:``. Earlier turns come first as masked ``[...]`` fields, each tokenized on
  its own like a ShareGPT row, so the only loss is on the rated answer and its EOS.
* ``kto`` — TRL unpaired preference: ``prompt``, ``completion``, ``label``; conversational, or
  with ``string_prompt`` the exact prompt string the answer came from and the completion text.
* ``dpo`` — TRL preference with explicit prompt: ``prompt``, ``chosen``, ``rejected``, from
  answers to the same user message (regenerations) with opposite net votes; every pair.
* ``sft`` — TRL language modelling: ``{"messages": [...]}`` per liked answer.
* ``openai`` — OpenAI chat fine-tuning JSONL per liked answer; every earlier answer in the
  history has ``"weight": 0`` (a disliked one stays as it happened; a liked one is trained in its
  own row), the rated answer ``"weight": 1``.

An answer's thread is the conversation's user messages in order, each followed by the answer
shown last before the rated answer was written (its latest ``ok`` sibling), ending with the user
message the rated answer answers: what the model was given, apart from turns cut for length.
Votes of opted-out users do not count, and no row holds a thread with an opted-out user's message.

Review decisions (`koalabot review`) apply: an excluded answer never becomes a row, and one
excluded as unsafe or private is not shown in any thread either; a correction is exported as a
liked answer (in sft and openai in place of the original, in kto and koala beside it, in dpo as
the chosen side against it). ``reviewed_only`` keeps only included and corrected answers,
``dedupe`` one answer per question, and ``redact`` (on by default) replaces personal data and
secrets in every text with placeholders (koalabot.export.redact).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import hmac
import io
import re
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from operator import attrgetter
from typing import Any, BinaryIO, TextIO, cast

import orjson

from koalabot.errors import KoalabotError
from koalabot.export.dedupe import Deduper, question_key
from koalabot.export.redact import Kind, find, replace
from koalabot.prompt.templates import TEMPLATES, clean
from koalabot.store.database import Database
from koalabot.store.models import REASONS, WITHHELD_REASONS, Decision
from koalabot.store.times import as_utc, iso_utc
from koalabot.store.training import (
    Thread,
    ThreadMessage,
    ThreadScope,
    count_threads,
    is_opted_out,
    optout_keys,
    sqlite_threads,
    stream_threads,
)

Row = dict[str, Any]
Messages = list[dict[str, Any]]

MARKER_USER = "USER:"
MARKER_GPT = "GPT:"
MARKER_GPT_BAD = "An Unhelpful Answer:"

SECRET_HELP = (
    "user ids are pseudonymised with a keyed hash, but no secret is set: set "
    "KOALABOT_PSEUDONYM_SECRET (for example to the output of "
    "`python -c 'import secrets; print(secrets.token_hex(32))'`) and keep it to get the same "
    "pseudonyms in every export, or pass --no-pseudonymize to write raw platform ids"
)


class ExportError(KoalabotError):
    """The export cannot run as asked (bad option combination, no pseudonym secret)."""


class Format(StrEnum):
    """The training-data formats `koalabot export` writes."""

    KOALA = "koala"
    KTO = "kto"
    DPO = "dpo"
    SFT = "sft"
    OPENAI = "openai"


#: Formats whose rows can carry the exact prompt string instead of chat messages.
STRING_PROMPT_FORMATS = frozenset({Format.KTO, Format.DPO})


@dataclass(frozen=True)
class ExportOptions:
    """What to export and how; the filters apply to the rated answers, never to their context."""

    format: Format
    since: datetime | None = None
    until: datetime | None = None  # exclusive
    platform: str | None = None
    channel: str | None = None
    model: str | None = None
    min_votes: int = 1
    include_failed: bool = False
    #: The HMAC key for pseudonyms; None writes raw platform ids.
    pseudonym_secret: str | None = None
    string_prompt: bool = False
    #: Add a ``meta`` object to each row; None means the format's default (all but openai).
    meta: bool | None = None
    #: Only answers included or corrected on the review page (`koalabot review`).
    reviewed_only: bool = False
    #: One answer per question: drop answers whose user message repeats an earlier one.
    dedupe: bool = False
    #: Replace e-mail addresses, phone numbers, secret URLs and API keys with placeholders.
    redact: bool = True

    def __post_init__(self) -> None:
        if self.string_prompt and self.format not in STRING_PROMPT_FORMATS:
            raise ExportError(f"--string-prompt applies to kto and dpo, not {self.format}")
        if self.min_votes < 1:
            raise ExportError("--min-votes must be at least 1")
        if self.pseudonym_secret == "":
            raise ExportError(SECRET_HELP)

    @property
    def with_meta(self) -> bool:
        """Whether rows carry ``meta`` (OpenAI's validator is strict, so not by default there)."""
        return self.meta if self.meta is not None else self.format is not Format.OPENAI


# --- pseudonyms --------------------------------------------------------------------------------

# User mentions inside message text: Slack <@U123> / <@W123|name>, Discord <@123> / <@!123>.
_MENTION = re.compile(r"<@!?([UW][A-Z0-9]+|\d+)(?:\|[^>]*)?>")
_CACHE_LIMIT = 100_000


class Pseudonymizer:
    """Stable, irreversible ids: HMAC-SHA256 with a secret key, so the same user gets the same
    pseudonym in every export made with that key and nobody without it can link one back.

    Without a key (``--no-pseudonymize``) the raw ``platform:id`` is written instead.
    """

    def __init__(self, secret: str | None) -> None:
        self._key = secret.encode() if secret is not None else None
        mac = hmac.new(self._key, digestmod=hashlib.sha256) if self._key else None
        # CPython's OpenSSL HMAC sits behind a Python wrapper that doubles what a copy costs, and
        # an export hashes every conversation: use the object underneath where there is one.
        self._hmac: Any = getattr(mac, "_hmac", None) or mac
        #: Pseudonyms already computed, by platform then user id (the same users vote often).
        self._users: dict[str, dict[str, str]] = {}
        self._cached = 0

    def _hash(self, prefix: str, value: str) -> str:
        assert self._hmac is not None
        mac = self._hmac.copy()  # the keyed state, without setting the key up again
        mac.update(value.encode())
        digest: str = mac.hexdigest()
        return prefix + digest[:20]

    def user(self, platform: str, user_id: str) -> str:
        """The pseudonym of a platform user (``u_`` + 80 bits of HMAC)."""
        if self._key is None:
            return f"{platform}:{user_id}"
        users = self._users.get(platform)
        if users is None:
            users = self._users[platform] = {}
        found = users.get(user_id)
        if found is None:
            if self._cached >= _CACHE_LIMIT:
                self._users.clear()
                self._cached = 0
                users = self._users[platform] = {}
            found = users[user_id] = self._hash("u_", f"user\0{platform}\0{user_id}")
            self._cached += 1
        return found

    def conversation(self, thread: Thread) -> str:
        """The pseudonym of a conversation (its id in the store, hashed)."""
        if self._key is None:
            return str(thread.id)
        return self._hash("c_", f"conversation\0{thread.id}")

    def text(self, platform: str, text: str) -> str:
        """Message text with every user mention replaced by the user's pseudonym."""
        if self._key is None or "<@" not in text:
            return text
        return _MENTION.sub(lambda m: f"<@{self.user(platform, m.group(1))}>", text)


# --- summary and progress ------------------------------------------------------------------------


@dataclass
class Summary:
    """What an export wrote and what it left out, by reason (printed on stderr)."""

    format: str
    rows: int = 0
    threads: int = 0
    voted_answers: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    #: What redaction replaced, by kind (each message counted once).
    redacted: Counter[Kind] = field(default_factory=Counter)

    def skip(self, reason: str) -> None:
        """Count one voted answer (or, for dpo, one answer without a pair) left out."""
        self.skipped[reason] += 1

    def add(self, later: Summary) -> None:
        """Count in the summary of the conversations that came after these (skip reasons keep
        the order they first appeared in, which breaks ties in the printed summary)."""
        self.rows += later.rows
        self.threads += later.threads
        self.voted_answers += later.voted_answers
        self.skipped.update(later.skipped)
        self.redacted.update(later.redacted)

    def lines(self) -> list[str]:
        """The human summary: rows written, then rows skipped by reason, most frequent first."""
        lines = [
            f"wrote {_count(self.rows, self.format + ' row')} from "
            f"{_count(self.voted_answers, 'voted answer')} in "
            f"{_count(self.threads, 'conversation')}"
        ]
        total = sum(self.skipped.values())
        if total:
            lines.append(f"skipped {total:,}:")
            lines += [f"  {n:>9,}  {reason}" for reason, n in self.skipped.most_common()]
        else:
            lines.append("skipped 0")
        found = [(kind, self.redacted[kind]) for kind in _REDACTED_NOUNS if self.redacted[kind]]
        if found:
            lines.append(
                "redacted " + ", ".join(_count(n, _REDACTED_NOUNS[kind]) for kind, n in found)
            )
        return lines


_REDACTED_NOUNS = {
    Kind.EMAIL: "e-mail address",
    Kind.PHONE: "phone number",
    Kind.URL: "secret URL",
    Kind.API_KEY: "API key",
}


def _count(n: int, noun: str) -> str:
    if n == 1:
        return f"{n:,} {noun}"
    return f"{n:,} {noun}es" if noun.endswith("ss") else f"{n:,} {noun}s"


class Progress:
    """A one-line progress display on a terminal (nothing when the stream is not a tty)."""

    def __init__(self, stream: TextIO | None, total: int, interval: float = 0.2) -> None:
        self.stream = stream if stream is not None and stream.isatty() else None
        self.total = total
        self.interval = interval
        self._started = time.monotonic()
        self._shown = self._started - interval  # draw on the first update

    def update(self, threads: int, rows: int) -> None:
        """Redraw at most every ``interval`` seconds."""
        if self.stream is None:
            return
        now = time.monotonic()
        if now - self._shown < self.interval:
            return
        self._shown = now
        share = f" ({100 * threads / self.total:.0f}%)" if self.total else ""
        rate = rows / max(now - self._started, 1e-9)
        self.stream.write(
            f"\rexporting: {threads:,}/{self.total:,} conversations{share}, "
            f"{rows:,} rows, {rate:,.0f} rows/s "
        )
        self.stream.flush()

    def close(self) -> None:
        """Erase the line so the summary starts clean."""
        if self.stream is not None:
            self.stream.write("\r\033[K")
            self.stream.flush()


# --- threads -----------------------------------------------------------------------------------

# Review decisions as plain strings: compared once or twice per answer, millions of times.
_INCLUDE, _EXCLUDE, _CORRECT = str(Decision.INCLUDE), str(Decision.EXCLUDE), str(Decision.CORRECT)


class ThreadView:
    """One conversation, indexed so each rated answer's thread is cheap to rebuild."""

    __slots__ = (
        "first_opted_out",
        "position",
        "questions",
        "shown",
        "thread",
        "voted",
        "withheld",
    )

    def __init__(self, thread: Thread, optout_users: Collection[str] = ()) -> None:
        self.thread = thread
        self.questions: list[ThreadMessage] = []
        self.position: dict[int, int] = {}
        self.shown: dict[int, list[ThreadMessage]] = {}
        #: The first message of an opted-out user: every thread reaching it is left out.
        self.first_opted_out: int | None = None
        #: Answers excluded on the review page as unsafe or private: no thread may show them.
        self.withheld: set[int] = set()
        #: Answers with votes (or votes left out because the voter opted out), in order.
        self.voted: list[ThreadMessage] = []
        questions, position, shown, voted = self.questions, self.position, self.shown, self.voted
        for m in thread.messages:
            if m.role == "user":
                position[m.id] = len(questions)
                questions.append(m)
                if (
                    optout_users
                    and self.first_opted_out is None
                    and m.author is not None
                    and is_opted_out(thread.platform, m.author, optout_users)
                ):
                    self.first_opted_out = m.id
            elif m.status == "ok" and m.parent_id is not None:
                if m.parent_id in shown:
                    shown[m.parent_id].append(m)
                else:
                    shown[m.parent_id] = [m]
                if m.review == _EXCLUDE and m.review_reason in WITHHELD_REASONS:
                    self.withheld.add(m.id)
            if m.role == "assistant" and (m.up or m.down or m.ignored):
                voted.append(m)

    def context(self, parent_id: int, before_id: int) -> list[ThreadMessage]:
        """User messages up to ``parent_id`` (which must be in this thread), each followed by
        the answer to it shown last before ``before_id``."""
        questions, shown = self.questions, self.shown
        end = self.position[parent_id]
        turns: list[ThreadMessage] = []
        for question in questions[:end]:
            turns.append(question)
            for answer in reversed(shown.get(question.id, ())):
                if answer.id < before_id:
                    turns.append(answer)
                    break
        turns.append(questions[end])
        return turns

    def shows_withheld(self, context: list[ThreadMessage]) -> bool:
        """Whether a thread shows an answer excluded as unsafe or private."""
        return bool(self.withheld) and any(m.id in self.withheld for m in context)

    def reaches_opted_out(self, parent_id: int) -> bool:
        """Whether the thread up to this user message holds an opted-out user's message."""
        return self.first_opted_out is not None and self.first_opted_out <= parent_id


# --- rows --------------------------------------------------------------------------------------


def encode_row(row: Row) -> bytes:
    """One JSON line: UTF-8 text as is (no ``\\u`` escapes), keys in the order built, compact."""
    return orjson.dumps(row, option=orjson.OPT_APPEND_NEWLINE)


def byte_writer(out: TextIO | BinaryIO) -> Callable[[bytes], object]:
    """Writes encoded rows to ``out``: as they are to a binary stream, decoded to a text one."""
    if isinstance(out, io.RawIOBase | io.BufferedIOBase):
        return out.write
    write = cast(TextIO, out).write
    return lambda data: write(data.decode())


Candidate = tuple[ThreadMessage, list[ThreadMessage]]

_ROLE = attrgetter("role")

#: ``review`` of the stand-in for a reviewer's correction. The stand-in carries the answer's id
#: negated, so the per-thread caches (keyed by message id) never mix up the two texts.
CORRECTION = "correction"


def _correction(answer: ThreadMessage) -> ThreadMessage:
    """The answer a reviewer wrote in place of ``answer``, as an answer of its own."""
    return answer._replace(id=-answer.id, text=answer.correction or "", review=CORRECTION)


def _is_liked(answer: ThreadMessage) -> bool:
    return answer.up > answer.down or answer.review == CORRECTION


class RowBuilder:
    """Turns threads into rows of one format, counting every voted answer left out and why."""

    def __init__(
        self,
        options: ExportOptions,
        summary: Summary,
        optout_users: Collection[str] = (),
    ) -> None:
        self.options = options
        self.summary = summary
        self.pseudo = Pseudonymizer(options.pseudonym_secret)
        self.optout_users = frozenset(optout_users)
        self.timed = options.since is not None or options.until is not None
        #: Whether answers are filtered by model or time (most exports: neither).
        self.scoped = self.timed or options.model is not None
        self.statuses = {"ok", "failed", "interrupted"} if options.include_failed else {"ok"}
        self.meta = options.with_meta
        self.deduper = Deduper() if options.dedupe else None
        #: Formats where a correction takes the place of its answer (they train on liked only).
        self.replaces = options.format in (Format.SFT, Format.OPENAI)
        self._rows: Callable[[ThreadView, Iterator[Candidate]], Iterator[Row]] = {
            Format.KOALA: self._labelled,
            Format.KTO: self._labelled,
            Format.SFT: self._liked,
            Format.OPENAI: self._liked,
            Format.DPO: self._pairs,
        }[options.format]
        # Shared by every row of the current thread.
        self._platform = ""
        self._conversation: str | None = None
        self._chat: dict[int, dict[str, Any]] = {}
        self._clean: dict[int, str] = {}
        self._authors: dict[int, list[str]] = {}
        #: Each correction's answer, by the correction's (negated) id.
        self._corrected: dict[int, ThreadMessage] = {}
        self._mention: Callable[[str], str] | None = None
        self._mentions: dict[str, Callable[[str], str]] = {}

    def rows(self, thread: Thread) -> Iterator[Row]:
        """Every row this thread gives (votes, filters, reviews and opt-outs applied)."""
        self._platform = thread.platform
        self._conversation = None
        self._chat.clear()
        self._clean.clear()
        self._authors.clear()
        self._corrected.clear()
        if self.options.pseudonym_secret is not None:
            mention = self._mentions.get(thread.platform)
            if mention is None:
                mention = self._mentions[thread.platform] = functools.partial(
                    self.pseudo.user, thread.platform
                )
            self._mention = mention
        if self.deduper is not None:
            self.deduper.new_conversation()
        view = ThreadView(thread, self.optout_users)
        return self._rows(view, self._candidates(view))

    # --- selection -----------------------------------------------------------------------

    def _candidates(self, view: ThreadView) -> Iterator[Candidate]:
        """Voted answers within the filters that may become rows, each with its thread."""
        voted = view.voted
        if self.scoped:
            voted = [answer for answer in voted if self._in_scope(answer)]
        if not voted:
            return
        summary = self.summary
        summary.threads += 1
        summary.voted_answers += len(voted)
        reject, ready = self._reject, self._ready
        # A correction stands in for its answer where only liked answers count, and with
        # --reviewed-only (dpo still pairs the two).
        replaced = self.replaces or self.options.reviewed_only
        for answer in voted:
            corrected = answer.review == _CORRECT and bool(answer.correction)
            if not (corrected and replaced):
                found = ready(view, answer, reject(view, answer))
                if found is not None:
                    yield found
            if corrected:
                correction = _correction(answer)
                found = ready(view, correction, self._reject_correction(view, answer))
                if found is not None:
                    self._corrected[correction.id] = answer
                    yield found

    def _ready(self, view: ThreadView, answer: ThreadMessage, reason: str) -> Candidate | None:
        """The answer with its thread, unless it is left out (and counted) for ``reason`` or
        for what its thread holds."""
        if not reason:
            assert answer.parent_id is not None
            context = view.context(answer.parent_id, abs(answer.id))
            if view.withheld and view.shows_withheld(context):
                reason = "thread shows an answer excluded as unsafe or private"
            elif self.deduper is not None and not self.deduper.keep(
                question_key(m.text for m in context if m.role == "user"), answer.parent_id
            ):
                reason = "repeated question (--dedupe)"
            else:
                return answer, context
        self.summary.skip(reason)
        return None

    def _in_scope(self, answer: ThreadMessage) -> bool:
        options = self.options
        if options.model is not None and answer.model != options.model:
            return False
        if not self.timed:
            return True
        when = as_utc(answer.created_at)
        if options.since is not None and when < options.since:
            return False
        return options.until is None or when < options.until

    def _reject(self, view: ThreadView, answer: ThreadMessage) -> str:
        """Why this voted answer gives no row ("" when it does)."""
        options = self.options
        if answer.status not in self.statuses:
            return f"answer {answer.status} (see --include-failed)"
        parent_id = answer.parent_id
        if parent_id is None or parent_id not in view.position:
            return "answer without its user message"
        if view.first_opted_out is not None and view.reaches_opted_out(parent_id):
            return "opted-out user in the thread"
        review = answer.review
        if review is not None and review == _EXCLUDE:
            return f"excluded on review: {REASONS.get(answer.review_reason or '', 'no reason')}"
        if options.reviewed_only and review not in (_INCLUDE, _CORRECT):
            return "not included on review (--reviewed-only)"
        up, down = answer.up, answer.down
        if up + down < options.min_votes:
            if answer.ignored and not up + down:
                return "votes only from opted-out users"
            return f"fewer than {options.min_votes} votes (--min-votes)"
        if up == down:
            return "net-zero votes"
        if not answer.text.strip():
            return "empty answer"
        if options.string_prompt and not answer.prompt:
            return "no stored prompt string (--string-prompt)"
        return ""

    def _reject_correction(self, view: ThreadView, answer: ThreadMessage) -> str:
        """Why a reviewer's correction of this answer gives no row ("" when it does): votes,
        status and the like do not matter, the thread does."""
        if answer.parent_id is None or answer.parent_id not in view.position:
            return "answer without its user message"
        if view.reaches_opted_out(answer.parent_id):
            return "opted-out user in the thread"
        if self.options.string_prompt and not answer.prompt:
            return "no stored prompt string (--string-prompt)"
        return ""

    # --- per format ------------------------------------------------------------------------

    def _labelled(self, view: ThreadView, candidates: Iterator[Candidate]) -> Iterator[Row]:
        build = self._koala if self.options.format is Format.KOALA else self._kto
        meta = self._meta if self.meta else None
        for answer, context in candidates:
            row = build(answer, context)
            if meta is not None:
                row["meta"] = meta(view, answer, context)
            yield row

    def _liked(self, view: ThreadView, candidates: Iterator[Candidate]) -> Iterator[Row]:
        openai = self.options.format is Format.OPENAI
        for answer, context in candidates:
            if not _is_liked(answer):
                self.summary.skip(f"disliked ({self.options.format} takes liked answers only)")
                continue
            if openai:
                # Only the rated answer is trained on; earlier answers are context.
                messages = [
                    {**self._chat_message(m), "weight": 0}
                    if m.role == "assistant"
                    else self._chat_message(m)
                    for m in context
                ]
                messages.append({**self._chat_message(answer), "weight": 1})
            else:
                messages = self._chat_messages(context)
                messages.append(self._chat_message(answer))
            row: Row = {"messages": messages}
            if self.meta:
                row["meta"] = self._meta(view, answer, context)
            yield row

    def _pairs(self, view: ThreadView, candidates: Iterator[Candidate]) -> Iterator[Row]:
        by_question: dict[int, list[ThreadMessage]] = {}
        corrections: list[ThreadMessage] = []
        for answer, _ in candidates:
            assert answer.parent_id is not None
            if answer.review == CORRECTION:
                corrections.append(answer)
            else:
                by_question.setdefault(answer.parent_id, []).append(answer)
        for siblings in by_question.values():
            liked = [a for a in siblings if a.net > 0]
            disliked = [a for a in siblings if a.net < 0]
            if not liked or not disliked:
                for _ in siblings:
                    self.summary.skip("no sibling answer with the opposite vote")
                continue
            for chosen in liked:
                for rejected in disliked:
                    row = self._pair(view, chosen, rejected)
                    if row is not None:
                        yield row
        for correction in corrections:
            row = self._pair(view, correction, self._corrected[correction.id])
            if row is not None:
                yield row

    def _pair(self, view: ThreadView, chosen: ThreadMessage, rejected: ThreadMessage) -> Row | None:
        assert chosen.parent_id is not None
        context = view.context(chosen.parent_id, min(abs(chosen.id), rejected.id))
        if view.shows_withheld(context):
            self.summary.skip("thread shows an answer excluded as unsafe or private")
            return None
        row: Row
        if self.options.string_prompt:
            if chosen.prompt != rejected.prompt:
                self.summary.skip("pair's prompt strings differ (--string-prompt)")
                return None
            row = {
                "prompt": self._text(chosen.prompt or ""),
                "chosen": self._completion_text(chosen),
                "rejected": self._completion_text(rejected),
            }
        else:
            row = {
                "prompt": self._chat_messages(context),
                "chosen": [self._chat_message(chosen)],
                "rejected": [self._chat_message(rejected)],
            }
        if self.meta:
            meta = self._meta(view, chosen, context)
            for key in ("answer_id", "votes", "model", "created_at"):
                del meta[key]
            meta.pop("review", None)
            meta["chosen"] = _side(chosen)
            meta["rejected"] = _side(rejected)
            row["meta"] = meta
        return row

    def _koala(self, answer: ThreadMessage, context: list[ThreadMessage]) -> Row:
        bad = not _is_liked(answer)
        keys, key, fields = _koala_layout(tuple(map(_ROLE, context)), bad)
        row: Row = {
            "marker_user": MARKER_USER,
            "marker_gpt": MARKER_GPT,
            "marker_gpt_bad": MARKER_GPT_BAD,
        }
        clean_text = self._clean_text
        for name, message in zip(keys, context, strict=True):
            row[name] = clean_text(message)
        row[key] = clean_text(answer)
        row["fields"] = fields
        return row

    def _kto(self, answer: ThreadMessage, context: list[ThreadMessage]) -> Row:
        if self.options.string_prompt:
            return {
                "prompt": self._text(answer.prompt or ""),
                "completion": self._completion_text(answer),
                "label": _is_liked(answer),
            }
        return {
            "prompt": self._chat_messages(context),
            "completion": [self._chat_message(answer)],
            "label": _is_liked(answer),
        }

    # --- pieces (cached per thread: rows of one thread share their earlier turns) ---------------

    def _chat_message(self, message: ThreadMessage) -> dict[str, Any]:
        found = self._chat.get(message.id)
        return found if found is not None else self._new_chat_message(message)

    def _new_chat_message(self, message: ThreadMessage) -> dict[str, Any]:
        found = self._chat[message.id] = {"role": message.role, "content": self._text(message.text)}
        return found

    def _chat_messages(self, context: list[ThreadMessage]) -> Messages:
        chat, new = self._chat, self._new_chat_message
        return [chat.get(m.id) or new(m) for m in context]

    def _clean_text(self, message: ThreadMessage) -> str:
        """The text as Koala's prompt holds it: stripped, markers neutralised."""
        found = self._clean.get(message.id)
        if found is None:
            found = self._clean[message.id] = clean(self._text(message.text))
        return found

    def _completion_text(self, answer: ThreadMessage) -> str:
        """The answer as the model continued its prompt string (after the template's gap)."""
        template = TEMPLATES.get(answer.template or "")
        gap = template.assistant_answer_sep if template is not None else ""
        return gap + self._text(answer.text)

    def _text(self, text: str) -> str:
        """Message text as exported: redacted (unless --no-redact), mentions pseudonymised."""
        if not self.options.redact:
            return self.pseudo.text(self._platform, text)
        spans = find(text)
        return replace(text, spans, self._mention, counts=self.summary.redacted) if spans else text

    def _meta(self, view: ThreadView, answer: ThreadMessage, context: list[ThreadMessage]) -> Row:
        """Ids (pseudonymised), votes and provenance for researchers; trainers ignore it."""
        if self._conversation is None:
            self._conversation = self.pseudo.conversation(view.thread)
        assert answer.parent_id is not None
        authors = self._authors.get(answer.parent_id)
        if authors is None:
            user, platform = self.pseudo.user, self._platform
            authors = self._authors[answer.parent_id] = []
            for m in context:
                if m.author and (pseudonym := user(platform, m.author)) not in authors:
                    authors.append(pseudonym)
        meta: Row = {
            "answer_id": abs(answer.id),
            "conversation": self._conversation,
            "authors": authors,
            "votes": {"up": answer.up, "down": answer.down},
            "model": answer.model,
            "platform": self._platform,
            "created_at": iso_utc(answer.created_at),
        }
        if answer.review is not None:
            meta["review"] = answer.review
        return meta


@functools.lru_cache(maxsize=1024)
def _koala_layout(roles: tuple[str, ...], bad: bool) -> tuple[tuple[str, ...], str, str]:
    """For a thread whose messages have these roles: each message's key, the rated answer's key
    and the ``fields`` string. Threads come in few shapes, so each is worked out once."""
    keys: list[str] = []
    fields: list[str] = []
    last = len(roles) - 1
    for i, role in enumerate(roles):
        if role == "assistant":
            keys.append(f"gpt_{i}")
            fields += [f"[gpt_{i}]", "[<|eos|>]"]
            continue
        keys.append(f"human_{i}")
        if i < last and roles[i + 1] == "user":
            fields.append(f"[marker_user+human_{i}]")
        else:
            marker = "marker_gpt_bad" if bad and i == last else "marker_gpt"
            fields.append(f"[marker_user+human_{i}+{marker}]")
    key = f"gpt_bad_{last + 1}" if bad else f"gpt_{last + 1}"
    fields += [key, "<|eos|>"]
    return tuple(keys), key, ",".join(fields)


def _side(answer: ThreadMessage) -> Row:
    """One answer of a dpo pair, for ``meta``: a correction names the answer it corrects."""
    side: Row = {
        "answer_id": abs(answer.id),
        "votes": {"up": answer.up, "down": answer.down},
        "model": answer.model,
        "created_at": iso_utc(answer.created_at),
    }
    if answer.review is not None:
        side["review"] = answer.review
    return side


# --- the export --------------------------------------------------------------------------------


async def export(
    db: Database,
    options: ExportOptions,
    out: TextIO | BinaryIO,
    *,
    optout_users: Collection[str] = (),
    progress: TextIO | None = None,
    workers: int = 1,
) -> Summary:
    """Stream every row of ``options.format`` from the store to ``out`` as JSON lines.

    ``optout_users`` ("platform:id", from settings) join the opt-outs stored by the bot. Memory
    holds one conversation at a time (a range of them from a SQLite file, on up to ``workers``
    processes; the rows are the same for any number). ``progress`` gets a progress line when it
    is a terminal.
    """
    optouts = set(optout_users) | await optout_keys(db)
    scope = ThreadScope(
        platform=options.platform,
        channel=options.channel,
        until=options.until,
        with_prompts=options.string_prompt,
    )
    summary = Summary(str(options.format))
    total = await count_threads(db, scope) if progress is not None and progress.isatty() else 0
    bar = Progress(progress, total)
    write = byte_writer(out)
    try:
        ranged = await sqlite_threads(db, scope, optouts)
        if ranged is not None:
            # Imported here: it builds on this module.
            from koalabot.export.parallel import Job, export_ranges

            # The file is read through APSW's SQLite, which does not see the locks of the
            # engine's, and worker processes start as copies of this one: no open connections.
            await db.engine.dispose()
            await export_ranges(
                Job(ranged, options, frozenset(optouts)), workers, write, summary, bar
            )
            return summary
        builder = RowBuilder(options, summary, optouts)
        # aclosing: a failed write (full disk, closed pipe) still ends the query cleanly.
        async with contextlib.aclosing(stream_threads(db, scope, optouts)) as threads:
            streamed = 0
            async for thread in threads:
                streamed += 1
                for row in builder.rows(thread):
                    write(encode_row(row))
                    summary.rows += 1
                bar.update(streamed, summary.rows)
    finally:
        bar.close()
    return summary


def print_summary(summary: Summary, options: ExportOptions, target: str, err: TextIO) -> None:
    """The summary on stderr, with where the rows went and how ids were written."""
    lines = summary.lines()
    lines[0] += f" to {target}"
    ids = (
        "user ids pseudonymised (HMAC-SHA256 keyed by KOALABOT_PSEUDONYM_SECRET)"
        if options.pseudonym_secret
        else "user ids written raw (--no-pseudonymize)"
    )
    lines.append(ids)
    if not options.redact:
        lines.append("text written as stored, nothing redacted (--no-redact)")
    err.write("".join(f"koalabot export: {line}\n" for line in lines))


__all__ = [
    "MARKER_GPT",
    "MARKER_GPT_BAD",
    "MARKER_USER",
    "SECRET_HELP",
    "ExportError",
    "ExportOptions",
    "Format",
    "Progress",
    "Pseudonymizer",
    "RowBuilder",
    "Summary",
    "ThreadView",
    "byte_writer",
    "encode_row",
    "export",
    "print_summary",
]
