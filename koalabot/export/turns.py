"""Shaping a thread into turns a trainer accepts: roles that alternate, one row per
prompt–completion (its votes resolved), and ShareGPT dialogues that train each liked answer once.

Strict chat templates (Llama 2's, TRL's checks) refuse two turns of one role in a row, which a
failed answer followed by a resend leaves in the store: `alternate` joins such turns with a blank
line, as a person reading the thread would take them. The rest works on whole candidates of one
thread, so the rows of any thread are decided from that thread alone (the same for any number of
export workers); an identical answer in another conversation is another row.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from operator import attrgetter
from typing import Any

from koalabot.export.view import Candidate, is_liked
from koalabot.store.ballots import ballots
from koalabot.store.threads import ThreadMessage

Messages = list[dict[str, Any]]

#: What joins two consecutive turns of one role.
JOIN = "\n\n"

TIED = "same prompt and completion voted both ways, tied (kto)"
RESOLVED = "same prompt and completion voted both ways, resolved by the majority (kto)"


def alternate(messages: Messages, key: str = "role", text: str = "content") -> Messages:
    """``messages`` with each run of one role merged into one message (texts joined by a blank
    line); the list itself when roles already alternate, which is nearly always."""
    previous: object = None
    for message in messages:
        role = message[key]
        if role == previous:
            return _merged(messages, key, text)
        previous = role
    return messages


def _merged(messages: Messages, key: str, text: str) -> Messages:
    out: Messages = []
    for message in messages:
        if out and out[-1][key] == message[key]:
            # A new dict: the per-thread caches hold the originals, shared by other rows.
            out[-1] = {**out[-1], text: out[-1][text] + JOIN + message[text]}
        else:
            out.append(message)
    return out


def squash(text: str) -> str:
    """Text compared with whitespace normalised (runs of spaces and newlines as one space)."""
    return " ".join(text.split())


#: Whether a voter's votes count (False for a user who opted out).
Counts = Callable[[str], bool]
#: An answer's votes as text (`koalabot.store.ballots`), or None where there are none to hand.
StoredVotes = Callable[[ThreadMessage], str | None]
#: One person's vote in a group: who (a user, or a stand-in unique to one answer), when, which way.
_Vote = tuple[object, datetime, int]
_LONG_AGO = datetime.min.replace(tzinfo=UTC)


def _votes(answer: ThreadMessage, counts: Counts, stored: StoredVotes) -> Iterator[_Vote]:
    """The votes an answer brings to a vote on its text: a reviewer's correction counts as one
    up-vote, an answer excluded on review as one down-vote, else the votes of its voters (each
    person as themselves, so one person voting on two identical answers is one person)."""
    liked = is_liked(answer)
    if (answer.up <= answer.down) if liked else (answer.down <= answer.up):
        yield ("review", answer.id), _LONG_AGO, 1 if liked else -1
    elif (text := stored(answer)) is None:
        # No single votes to hand (built in memory): each vote is a person of its own.
        yield from (((answer.id, i), _LONG_AGO, 1) for i in range(answer.up))
        yield from (((answer.id, -i - 1), _LONG_AGO, -1) for i in range(answer.down))
    else:
        for user, rating, at in ballots(text):
            if counts(user):
                yield user, at, rating


def _majority(group: list[Candidate], counts: Counts, stored: StoredVotes) -> bool | None:
    """Liked or not by the latest vote of each person on any answer of the group, and the
    majority of those (None on a tie)."""
    latest: dict[object, tuple[datetime, int]] = {}
    for answer, _ in group:
        for person, at, rating in _votes(answer, counts, stored):
            if person not in latest or latest[person][0] <= at:
                latest[person] = at, rating
    net = sum(rating for _, rating in latest.values())
    return None if net == 0 else net > 0


#: A label its row carries, or None and why it gives no row.
Decision = tuple[bool | None, str]


def resolve_labels(
    found: list[Candidate],
    key: Callable[[Candidate], object],
    counts: Counts = lambda user: True,
    stored: StoredVotes = attrgetter("ballots"),
) -> dict[int, Decision]:
    """The label, or None and why there is no row, of each answer (by id) whose prompt and
    completion another answer of ``found`` (one thread's candidates) shares: every other answer
    gives its row with its own label (`is_liked`), and nearly always this is empty.

    Answers with the same ``key`` (prompt) and the same text (whitespace normalised) are one
    prompt–completion: when they carry both labels, the latest vote of each person on any of them
    (``counts``: whose votes count; ``stored``: an answer's votes as text) decides by majority
    and the first answer with the winning label gives the one row (None and a reason for the
    rest); a tie gives none.
    """
    decided: dict[int, Decision] = {}
    if len(found) < 2 or len({answer.parent_id for answer, _ in found}) == len(found):
        return decided
    # Only answers to one question can share a prompt, and only where they carry both labels is
    # there anything to resolve: most threads stop here, before any text is compared.
    by_question: dict[int | None, list[Candidate]] = {}
    for candidate in found:
        by_question.setdefault(candidate[0].parent_id, []).append(candidate)
    for siblings in by_question.values():
        if len(siblings) > 1 and len({is_liked(answer) for answer, _ in siblings}) > 1:
            groups: dict[tuple[object, str], list[Candidate]] = {}
            for candidate in siblings:
                text = squash(candidate[0].text)
                groups.setdefault((key(candidate), text), []).append(candidate)
            for group in groups.values():
                decided.update(_decide(group, counts, stored))
    return decided


def _decide(
    group: list[Candidate], counts: Counts, stored: StoredVotes
) -> Iterator[tuple[int, Decision]]:
    labels = {is_liked(answer) for answer, _ in group}
    if len(labels) == 1:
        label = labels.pop()
        for answer, _ in group:
            yield answer.id, (label, "")
        return
    winner = _majority(group, counts, stored)
    chosen = next((a.id for a, _ in group if is_liked(a) == winner), None)
    for answer, _ in group:
        if answer.id == chosen:
            yield answer.id, (winner, "")
        else:
            yield answer.id, (None, TIED if winner is None else RESOLVED)


def sharegpt_paths(liked: Iterable[Candidate]) -> Iterator[list[ThreadMessage]]:
    """The dialogues of one thread's liked answers (in id order) for a trainer that trains every
    assistant turn: each liked answer in exactly one dialogue, and no other answer as a turn.

    A liked answer continues the previous dialogue when its thread is that dialogue plus user
    messages; otherwise the dialogue so far is done and a new one starts after the last answer
    in its thread, since that answer is disliked, unrated or already trained (the thread is cut
    before it: the model learns the answer without the turns before that cut).
    """
    current: list[ThreadMessage] = []
    for answer, context in liked:
        n = len(current)
        if current and _ids(context[:n]) == _ids(current) and _users_only(context[n:]):
            current = [*context, answer]
            continue
        if current:
            yield current
        start = max((i + 1 for i, m in enumerate(context) if m.role == "assistant"), default=0)
        current = [*context[start:], answer]
    if current:
        yield current


def _ids(messages: list[ThreadMessage]) -> list[int]:
    return [m.id for m in messages]


def _users_only(messages: list[ThreadMessage]) -> bool:
    return all(m.role == "user" for m in messages)


__all__ = [
    "JOIN",
    "RESOLVED",
    "TIED",
    "Counts",
    "Decision",
    "Messages",
    "StoredVotes",
    "alternate",
    "resolve_labels",
    "sharegpt_paths",
    "squash",
]
