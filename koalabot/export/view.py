"""The thread as the export sees it, and which of its voted answers become rows.

`ThreadView` indexes one conversation so that each rated answer's thread is cheap to rebuild: the
conversation's user messages in order, each followed by the answer the thread continued with
when the rated answer was written (the one shown last, or after a battle its first side that did
not lose, as the bot's memory has it), ending with the user message the rated answer answers.
`Selection` applies the filters, votes, opt-outs and review decisions (`koalabot review`): an
excluded answer never becomes a row, one excluded as unsafe or private is shown in no thread, and
a correction becomes an answer of its own (`CORRECTION`). Every voted answer left out is counted
with its reason.

Both run once per conversation and once per voted answer, millions of times in an export, so
they index with plain dicts and compare review decisions as plain strings.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator

from koalabot.export.dedupe import Deduper, question_key
from koalabot.export.options import ExportOptions, Format
from koalabot.export.summary import Summary
from koalabot.store.battles import ThreadBattles
from koalabot.store.models import REASONS, WITHHELD_REASONS, Decision
from koalabot.store.threads import Thread, ThreadMessage, is_opted_out
from koalabot.store.times import as_utc

# Review decisions as plain strings: compared once or twice per answer, millions of times.
_INCLUDE, _EXCLUDE, _CORRECT = str(Decision.INCLUDE), str(Decision.EXCLUDE), str(Decision.CORRECT)
#: Exclusion reasons that make an answer a negative example with --reviewed-only in kto and dpo:
#: the reviewer judged the answer, not its right to be seen (unlike WITHHELD_REASONS).
NEGATIVE_REASONS = frozenset({"wrong", "low_quality"})


class ThreadView:
    """One conversation, indexed so each rated answer's thread is cheap to rebuild."""

    __slots__ = (
        "battled",
        "battles",
        "first_opted_out",
        "position",
        "questions",
        "shown",
        "thread",
        "voted",
        "withheld",
    )

    def __init__(
        self,
        thread: Thread,
        optout_users: Collection[str] = (),
        battles: ThreadBattles | None = None,
    ) -> None:
        self.thread = thread
        #: The thread's judged battles, if any.
        self.battles = battles
        self.questions: list[ThreadMessage] = []
        self.position: dict[int, int] = {}
        self.shown: dict[int, list[ThreadMessage]] = {}
        #: The first message of an opted-out user: every thread reaching it is left out.
        self.first_opted_out: int | None = None
        #: Whether the thread holds a side-by-side battle's answers.
        self.battled = False
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
                if m.side is not None:
                    self.battled = True
            if m.role == "assistant" and (m.up or m.down or m.ignored):
                voted.append(m)

    def context(self, parent_id: int, before_id: int) -> list[ThreadMessage]:
        """User messages up to ``parent_id`` (which must be in this thread), each followed by
        the answer to it the thread continued with before ``before_id``."""
        questions, shown, battled = self.questions, self.shown, self.battled
        lost = self.battles.lost if self.battles is not None else frozenset[int]()
        end = self.position[parent_id]
        turns: list[ThreadMessage] = []
        for question in questions[:end]:
            turns.append(question)
            answers = shown.get(question.id, ())
            answer = _preferred(answers, before_id, lost) if battled else None
            if answer is None:
                answer = next((a for a in reversed(answers) if a.id < before_id), None)
            if answer is not None:
                turns.append(answer)
        turns.append(questions[end])
        return turns

    def shows_withheld(self, context: list[ThreadMessage]) -> bool:
        """Whether a thread shows an answer excluded as unsafe or private."""
        return bool(self.withheld) and any(m.id in self.withheld for m in context)

    def reaches_opted_out(self, parent_id: int) -> bool:
        """Whether the thread up to this user message holds an opted-out user's message."""
        return self.first_opted_out is not None and self.first_opted_out <= parent_id


def _preferred(
    answers: Collection[ThreadMessage], before_id: int, lost: Collection[int]
) -> ThreadMessage | None:
    """A battle's answer the thread continued with: its first side that did not lose (A before
    any choice and on a tie); None after no battle."""
    return next(
        (a for a in answers if a.side is not None and a.id < before_id and a.id not in lost), None
    )


#: A rated answer that may become a row, with its thread.
Candidate = tuple[ThreadMessage, list[ThreadMessage]]

#: ``review`` of the stand-in for a reviewer's correction. The stand-in carries the answer's id
#: negated, so the per-thread caches (keyed by message id) never mix up the two texts.
CORRECTION = "correction"


def correction_of(answer: ThreadMessage) -> ThreadMessage:
    """The answer a reviewer wrote in place of ``answer``, as an answer of its own."""
    return answer._replace(id=-answer.id, text=answer.correction or "", review=CORRECTION)


def is_liked(answer: ThreadMessage) -> bool:
    """Whether an answer is trained on as a good one: more up-votes (and not excluded on review),
    or a reviewer wrote it."""
    if answer.review == _EXCLUDE:
        return False
    return answer.up > answer.down or answer.review == CORRECTION


def is_disliked(answer: ThreadMessage) -> bool:
    """Whether an answer is a negative example: more down-votes, or excluded on review (which
    only lets through, with --reviewed-only in kto and dpo, answers judged wrong or poor)."""
    return answer.down > answer.up or answer.review == _EXCLUDE


class Selection:
    """Which voted answers of a thread may become rows; every other one is counted in
    ``summary`` with why."""

    def __init__(self, options: ExportOptions, summary: Summary) -> None:
        self.options = options
        self.summary = summary
        self.timed = options.since is not None or options.until is not None
        #: Whether answers are filtered by model or time (most exports: neither).
        self.scoped = self.timed or options.model is not None
        self.statuses = {"ok", "failed", "interrupted"} if options.include_failed else {"ok"}
        self.deduper = Deduper() if options.dedupe else None
        #: Where a correction takes the place of its answer: formats that train on liked answers
        #: only, and with --reviewed-only (dpo still pairs the two).
        self.replaced = (
            options.format in (Format.SFT, Format.OPENAI, Format.SHAREGPT) or options.reviewed_only
        )
        self.negatives = options.reviewed_negatives
        #: Each correction's answer, by the correction's (negated) id, in the current thread.
        self.corrected: dict[int, ThreadMessage] = {}

    def new_thread(self) -> None:
        """Forget the previous conversation's corrections (and, for --dedupe, its questions)."""
        self.corrected.clear()
        if self.deduper is not None:
            self.deduper.new_conversation()

    def candidates(self, view: ThreadView) -> Iterator[Candidate]:
        """Voted answers within the filters that may become rows, each with its thread."""
        voted = view.voted
        if self.scoped:
            voted = [answer for answer in voted if self._in_scope(answer)]
        if not voted:
            return
        summary = self.summary
        summary.threads += 1
        summary.voted_answers += len(voted)
        reject, ready, replaced = self._reject, self._ready, self.replaced
        for answer in voted:
            corrected = answer.review == _CORRECT and bool(answer.correction)
            if not (corrected and replaced):
                found = ready(view, answer, reject(view, answer))
                if found is not None:
                    yield found
            if corrected:
                correction = correction_of(answer)
                found = ready(view, correction, self._reject_correction(view, answer))
                if found is not None:
                    self.corrected[correction.id] = answer
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
            if self.negatives and answer.review_reason in NEGATIVE_REASONS:
                return self._reject_text(answer)
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
        return self._reject_text(answer)

    def _reject_text(self, answer: ThreadMessage) -> str:
        """Why this answer's text gives no row ("" when it does)."""
        text = answer.text
        if not text or text.isspace():  # as `not text.strip()`, without copying the text
            return "empty answer"
        if self.options.string_prompt and not answer.prompt:
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


__all__ = [
    "CORRECTION",
    "NEGATIVE_REASONS",
    "Candidate",
    "Selection",
    "ThreadView",
    "correction_of",
    "is_disliked",
    "is_liked",
]
