"""Rows: each voted answer that `view.Selection` keeps, in the layout of one format
(reference/tgi-and-koala.md §4–5), with its text redacted and its ids pseudonymised.

* ``koala`` — EasyLM rows as Koala's data pipeline built them (``marker_*``, ``human_N``,
  ``gpt_N`` or ``gpt_bad_N``, ``fields``): a liked answer under ``GPT:``, a disliked one under
  ``An Unhelpful Answer:``. Earlier turns come first as masked ``[...]`` fields, each tokenized on
  its own like a ShareGPT row, so the only loss is on the rated answer and its EOS.
* ``kto`` — TRL unpaired preference: ``prompt``, ``completion``, ``label``; conversational, or
  with ``string_prompt`` the exact prompt string the answer came from and the completion text.
* ``dpo`` — TRL preference with explicit prompt: ``prompt``, ``chosen``, ``rejected``, from
  answers to the same user message (regenerations) with opposite net votes; every pair.
* ``sft`` — TRL conversational prompt–completion per liked answer: the thread as ``prompt``, the
  answer as ``completion``, so only that answer is trained; with ``sft_messages`` TRL language
  modelling, ``{"messages": [...]}``, with disliked answers left out of the thread.
* ``openai`` — OpenAI chat fine-tuning JSONL per liked answer; every earlier answer in the
  history has ``"weight": 0`` (a disliked one stays as it happened; a liked one is trained in its
  own row), the rated answer ``"weight": 1``.
* ``sharegpt`` — FastChat's (and Koala's ShareGPT data's) ``{"id", "conversations"}``: every
  ``gpt`` turn is trained, so each dialogue holds liked answers only (`turns.sharegpt_paths`).

Every chat-shaped row (all but ``koala``, which keeps the served prompt's turns) alternates roles
(`turns.alternate`), and message text is neutralised as the prompt neutralises it (no literal
``</s>`` or role marker) unless ``raw_text``; a ``--string-prompt`` prompt is the stored string,
exactly as sent.

A correction is exported as a liked answer: in sft and openai in place of the original, in kto
and koala beside it, in dpo as the chosen side against it. Rows of one thread share their earlier
turns, so each message's exported form is built once per thread and reused (the per-thread
caches below); that sharing is why rows are dicts built here and not dataclasses.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection, Iterator, Mapping
from operator import attrgetter
from typing import Any

import orjson

from koalabot.export.battles import battle_answers
from koalabot.export.options import ExportOptions, Format
from koalabot.export.pseudonyms import Pseudonymizer
from koalabot.export.redact import find, replace
from koalabot.export.summary import Summary
from koalabot.export.turns import (
    StoredVotes,
    alternate,
    resolve_labels,
    sharegpt_paths,
    squash,
)
from koalabot.export.view import (
    CORRECTION,
    Candidate,
    Selection,
    ThreadView,
    is_disliked,
    is_liked,
)
from koalabot.prompt.templates import TEMPLATES, neutralise
from koalabot.store.battles import ThreadBattles
from koalabot.store.threads import Thread, ThreadMessage, is_opted_out
from koalabot.store.times import iso_utc

Row = dict[str, Any]
Messages = list[dict[str, Any]]

MARKER_USER = "USER:"
MARKER_GPT = "GPT:"
MARKER_GPT_BAD = "An Unhelpful Answer:"

_ROLE = attrgetter("role")


def encode_row(row: Row) -> bytes:
    """One JSON line: UTF-8 text as is (no ``\\u`` escapes), keys in the order built, compact."""
    return orjson.dumps(row, option=orjson.OPT_APPEND_NEWLINE)


class RowBuilder:
    """Turns threads into rows of one format, counting every voted answer left out and why."""

    def __init__(
        self,
        options: ExportOptions,
        summary: Summary,
        optout_users: Collection[str] = (),
        battles: Mapping[int, ThreadBattles] | None = None,
    ) -> None:
        self.options = options
        #: Per conversation, its judged battles (the thread shown, and dpo rows).
        self.battles = battles or {}
        self.selection = Selection(options, summary)
        self.pseudo = Pseudonymizer(options.pseudonym_secret)
        self.optout_users = frozenset(optout_users)
        self.meta = options.with_meta
        self._raw = options.raw_text
        self._rows: Callable[[ThreadView, Iterator[Candidate]], Iterator[Row]] = {
            Format.KOALA: self._labelled,
            Format.KTO: self._labelled,
            Format.SFT: self._liked,
            Format.OPENAI: self._liked,
            Format.DPO: self._pairs,
            Format.SHAREGPT: self._sharegpt,
        }[options.format]
        # Shared by every row of the current thread.
        self._platform = ""
        self._conversation: str | None = None
        self._chat: dict[int, dict[str, Any]] = {}
        self._clean: dict[int, str] = {}
        self._authors: dict[int, list[str]] = {}
        self._mention: Callable[[str], str] | None = None
        self._mentions: dict[str, Callable[[str], str]] = {}

    @property
    def summary(self) -> Summary:
        """Where rows left out (and text redacted) are counted; a new one may be set at any
        time between threads."""
        return self.selection.summary

    @summary.setter
    def summary(self, summary: Summary) -> None:
        self.selection.summary = summary

    def rows(self, thread: Thread) -> Iterator[Row]:
        """Every row this thread gives (votes, filters, reviews and opt-outs applied)."""
        self._platform = thread.platform
        self._conversation = None
        self._chat.clear()
        self._clean.clear()
        self._authors.clear()
        self.selection.new_thread()
        if self.options.pseudonym_secret is not None:
            mention = self._mentions.get(thread.platform)
            if mention is None:
                mention = self._mentions[thread.platform] = functools.partial(
                    self.pseudo.user, thread.platform
                )
            self._mention = mention
        view = ThreadView(thread, self.optout_users, self.battles.get(thread.id))
        return self._rows(view, self.selection.candidates(view))

    # --- per format ------------------------------------------------------------------------

    def _labelled(self, view: ThreadView, candidates: Iterator[Candidate]) -> Iterator[Row]:
        meta = self._meta if self.meta else None
        if self.options.format is Format.KOALA:
            for answer, context in candidates:
                row = self._koala(answer, context)
                if meta is not None:
                    row["meta"] = meta(view, answer, context)
                yield row
            return
        key = _stored_prompt if self.options.string_prompt else _context_ids
        # One label per prompt–completion (`turns.resolve_labels`).
        found = list(candidates)
        decided = {}
        if len(found) > 1:
            decided = resolve_labels(found, key, self._counts, _stored_votes(view.thread))
        for answer, context in found:
            label: bool | None = is_liked(answer)
            if decided and answer.id in decided:
                label, reason = decided[answer.id]
                if label is None:
                    self.summary.skip(reason)
                    continue
            row = self._kto(answer, context, bool(label))
            if meta is not None:
                row["meta"] = meta(view, answer, context)
            yield row

    def _liked_only(self, candidates: Iterator[Candidate]) -> Iterator[Candidate]:
        for candidate in candidates:
            if is_liked(candidate[0]):
                yield candidate
            else:
                self.summary.skip(f"disliked ({self.options.format} takes liked answers only)")

    def _liked(self, view: ThreadView, candidates: Iterator[Candidate]) -> Iterator[Row]:
        openai = self.options.format is Format.OPENAI
        sft_messages = self.options.sft_messages
        for answer, context in self._liked_only(candidates):
            row: Row
            if openai:
                # Only the rated answer is trained on; earlier answers are context.
                messages = [
                    {**self._chat_message(m), "weight": 0}
                    if m.role == "assistant"
                    else self._chat_message(m)
                    for m in context
                ]
                messages.append({**self._chat_message(answer), "weight": 1})
                row = {"messages": alternate(messages)}
            elif sft_messages:
                kept = [m for m in context if m.role == "user" or not is_disliked(m)]
                row = {
                    "messages": alternate([*self._chat_messages(kept), self._chat_message(answer)])
                }
            else:
                row = {
                    "prompt": alternate(self._chat_messages(context)),
                    "completion": [self._chat_message(answer)],
                }
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
        pairs: list[tuple[ThreadMessage, ThreadMessage]] = []
        for siblings in by_question.values():
            liked = [a for a in siblings if is_liked(a)]
            disliked = [a for a in siblings if is_disliked(a)]
            if not liked or not disliked:
                for _ in siblings:
                    self.summary.skip("no sibling answer with the opposite vote")
                continue
            pairs.extend((chosen, rejected) for chosen in liked for rejected in disliked)
        pairs.extend((c, self.selection.corrected[c.id]) for c in corrections)
        battles = view.battles.pairs if view.battles is not None else ()
        pairs.extend(battle_answers(view, battles, self.selection))  # export/battles
        # Votes and a battle may pair the same two answers: one row (same thread, same texts).
        written: set[tuple[int, int]] = set()
        for chosen, rejected in pairs:
            if (chosen.id, rejected.id) in written:
                self.summary.skip("same pair from votes and a battle (dpo)")
                continue
            written.add((chosen.id, rejected.id))
            row = self._pair(view, chosen, rejected)
            if row is not None:
                yield row

    def _sharegpt(self, view: ThreadView, candidates: Iterator[Candidate]) -> Iterator[Row]:
        for path in sharegpt_paths(self._liked_only(candidates)):
            answer = path[-1]
            if self._conversation is None:
                self._conversation = self.pseudo.conversation(view.thread)
            turns = [
                {"from": "human" if m.role == "user" else "gpt", "value": self._text(m.text)}
                for m in path
            ]
            row: Row = {
                "id": f"{self._conversation}_{abs(answer.id)}",
                "conversations": alternate(turns, "from", "value"),
            }
            if self.meta:
                row["meta"] = self._meta(view, answer, path[:-1])
            yield row

    def _pair(self, view: ThreadView, chosen: ThreadMessage, rejected: ThreadMessage) -> Row | None:
        assert chosen.parent_id is not None
        if squash(chosen.text) == squash(rejected.text):
            self.summary.skip("pair's chosen and rejected texts are equal (dpo)")
            return None
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
                "prompt": self._redacted(chosen.prompt or ""),
                "chosen": self._completion_text(chosen),
                "rejected": self._completion_text(rejected),
            }
        else:
            row = {
                "prompt": alternate(self._chat_messages(context)),
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
        bad = not is_liked(answer)
        # Consecutive user messages stay apart, as the served prompt holds them (EasyLM reads
        # fields, not a chat template, so nothing there asks roles to alternate).
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

    def _kto(self, answer: ThreadMessage, context: list[ThreadMessage], label: bool) -> Row:
        if self.options.string_prompt:
            return {
                "prompt": self._redacted(answer.prompt or ""),
                "completion": self._completion_text(answer),
                "label": label,
            }
        return {
            "prompt": alternate(self._chat_messages(context)),
            "completion": [self._chat_message(answer)],
            "label": label,
        }

    def _counts(self, voter: str) -> bool:
        """Whether a voter's votes count (they did not opt out)."""
        return not self.optout_users or not is_opted_out(self._platform, voter, self.optout_users)

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
            found = self._clean[message.id] = self._text(message.text).strip()
        return found

    def _completion_text(self, answer: ThreadMessage) -> str:
        """The answer as the model continued its prompt string (after the template's gap)."""
        template = TEMPLATES.get(answer.template or "")
        gap = template.assistant_answer_sep if template is not None else ""
        return gap + self._text(answer.text)

    def _text(self, text: str) -> str:
        """Message text as exported: redacted, mentions pseudonymised, role markers and special
        tokens neutralised as in the prompt (unless --raw-text)."""
        if self._raw:
            return self._redacted(text)
        if self.options.redact:
            # `_redacted`'s common case inline: this runs for every message of every thread.
            spans = find(text)
            return neutralise(
                replace(text, spans, self._mention, counts=self.summary.redacted) if spans else text
            )
        return neutralise(self._redacted(text))

    def _redacted(self, text: str) -> str:
        """Text redacted (unless --no-redact), mentions pseudonymised."""
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


def _stored_votes(thread: Thread) -> StoredVotes:
    """Where an answer's votes as text come from: the thread's reader looks them up (by the
    answer's id: a correction stands in with it negated), else the answer holds them."""
    lookup = thread.ballots_of
    if lookup is None:
        return attrgetter("ballots")
    return lambda answer: lookup(abs(answer.id))


def _stored_prompt(candidate: Candidate) -> object:
    return candidate[0].prompt


def _context_ids(candidate: Candidate) -> object:
    return tuple(m.id for m in candidate[1])


@functools.lru_cache(maxsize=1024)
def _koala_layout(roles: tuple[str, ...], bad: bool) -> tuple[tuple[str, ...], str, str]:
    """For a thread whose messages have these roles: each message's key, the rated answer's key
    and the ``fields`` string. Threads come in few shapes, so each is worked out once."""
    keys: list[str] = []
    fields: list[str] = []
    pending: list[str] = []
    last = len(roles) - 1
    for i, role in enumerate(roles):
        if role == "assistant":
            keys.append(f"gpt_{i}")
            fields += [f"[gpt_{i}]", "[<|eos|>]"]
            continue
        keys.append(f"human_{i}")
        pending += ["marker_user", f"human_{i}"]
        if i < last and roles[i + 1] == "user":
            # One field for consecutive user messages: "+" puts the prompt's space between them.
            continue
        marker = "marker_gpt_bad" if bad and i == last else "marker_gpt"
        fields.append("[" + "+".join([*pending, marker]) + "]")
        pending.clear()
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


__all__ = [
    "MARKER_GPT",
    "MARKER_GPT_BAD",
    "MARKER_USER",
    "Messages",
    "Row",
    "RowBuilder",
    "encode_row",
]
