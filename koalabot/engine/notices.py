"""Every sentence the bot says that is not the model's: refusals, failures, the cut-history note
and the acknowledgements of votes.

One place, so the wording can be read (and translated, one day) as a whole. The vote
acknowledgements keep each platform's wording as its adapter wrote it: Slack's note is an
ephemeral message under the answer, Discord's a private follow-up to a button, and each was tuned
for where it shows. Also here: `notify` and `refuse`, the two ways a notice reaches a thread.
"""

from __future__ import annotations

import logging

from koalabot.events import AnswerResult, FeedbackResult, ReplySink

log = logging.getLogger(__name__)

EMPTY_MESSAGE = "I only read text. Write your question in words and I'll answer it."
ONLY_ATTACHMENTS = (
    "I can't read attachments or images, only text. Paste the part you want me to look at."
)
INTERRUPTED = "I was restarted before I could finish this answer. Please ask again."
SHUTTING_DOWN = "I'm restarting right now; your message is saved. Please send it again in a minute."
UNEXPECTED = "Something went wrong on my side while answering. Please try again."
SPOOLED = (
    "I could not reach my memory (the database) just now. I have kept your message and will "
    "answer it here as soon as it is back: no need to send it again."
)
#: How to retry a failed answer in place, after why it failed: chat platforms show a 🔄
#: button under the notice, the terminal has /retry. Either way the same words sent again are
#: taken as the retry (koalabot/store/resends.py), not as a second question.
RETRY_HINTS = {"terminal": "To retry, type /retry or send the same message again."}
RETRY_BUTTON_HINT = "To retry, press 🔄 below or send the same message again."
#: Shown in place of an answer the model left empty.
NO_ANSWER = "(no answer)"

# Discord's vote acknowledgements (private follow-ups to a button click).
VOTE_THANKS = {1: "Thanks, I noted your 👍.", -1: "Thanks, I noted your 👎."}
VOTE_UNKNOWN = "I could not find that answer any more, so the vote was not recorded."
VOTE_FAILED = "I could not save your vote just now. Please try again in a moment."
REGEN_UNKNOWN = "I could not find that answer any more, so I cannot try again."
VOTE_KEPT = {
    1: "Thanks! My database is away for a moment: I'll record your 👍 as soon as it is back.",
    -1: "Thanks! My database is away for a moment: I'll record your 👎 as soon as it is back.",
    0: "My database is away for a moment: I'll remove your vote as soon as it is back.",
}


def cut_notice(dropped: int) -> str:
    """The note under an answer whose prompt left the thread's ``dropped`` oldest messages out."""
    noun = "message" if dropped == 1 else "messages"
    return (
        f"(This thread is long: I no longer see its {dropped} oldest {noun}. "
        "Start a new thread to begin fresh.)"
    )


def retry_notice(reason: str, platform: str) -> str:
    """A failed answer's notice: ``reason`` (why it failed), then how to retry it."""
    return f"{reason} {RETRY_HINTS.get(platform, RETRY_BUTTON_HINT)}"


def shown_answer(answer: str, dropped: int, first_notice: str) -> str:
    """The answer as the thread shows it: with the cut-history note, and ``first_notice`` (the
    operator's notice, for a thread's first answer; "" otherwise)."""
    shown = answer or NO_ANSWER
    if dropped:
        shown += "\n\n" + cut_notice(dropped)
    if first_notice:
        shown += "\n\n" + first_notice
    return shown


def slack_vote_words(result: FeedbackResult) -> str:
    """Slack's ephemeral note to the person who voted."""
    if result.kept:
        mark = {1: "your 👍", -1: "your 👎"}.get(result.rating)
        action = f"record {mark}" if mark else "remove your vote"
        return f"Thanks! My database is away for a moment: I'll {action} as soon as it is back."
    if not result.recorded:
        return "Sorry, I could not record that vote."
    if result.rating > 0:
        return "Thanks! I noted your 👍 on this answer."
    if result.rating < 0:
        return "Thanks! I noted your 👎 on this answer — it helps make me better."
    return "Your vote on this answer is removed."


def discord_vote_reply(result: FeedbackResult) -> str:
    """Discord's private follow-up to a vote button."""
    if result.recorded:
        return VOTE_THANKS[result.rating]
    if result.kept:
        return VOTE_KEPT[result.rating]
    return VOTE_FAILED if result.reason == "store unavailable" else VOTE_UNKNOWN


async def notify(sink: ReplySink, notice: str) -> None:
    """Show a notice in the thread; a platform that fails to show it is logged, not raised."""
    try:
        await sink.notice(notice)
    except Exception:
        log.warning("could not show a notice", exc_info=True)


async def refuse(
    sink: ReplySink, status: str, notice: str, message_id: int | None = None
) -> AnswerResult:
    """Tell the thread why there is no answer, and say so in the result."""
    await notify(sink, notice)
    return AnswerResult(status, user_message_id=message_id, notice=notice)


__all__ = [
    "EMPTY_MESSAGE",
    "INTERRUPTED",
    "NO_ANSWER",
    "ONLY_ATTACHMENTS",
    "REGEN_UNKNOWN",
    "RETRY_BUTTON_HINT",
    "RETRY_HINTS",
    "SHUTTING_DOWN",
    "SPOOLED",
    "UNEXPECTED",
    "cut_notice",
    "discord_vote_reply",
    "notify",
    "refuse",
    "retry_notice",
    "shown_answer",
    "slack_vote_words",
]
