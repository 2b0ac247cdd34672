"""Every sentence the bot says that is not the model's: refusals, failures, the cut-history note
and the acknowledgements of votes.

One place, so the wording can be read (and translated, one day) as a whole. The vote
acknowledgements keep each platform's wording as its adapter wrote it: Slack's note is an
ephemeral message under the answer, Discord's a private follow-up to a button, and each was tuned
for where it shows. Also here: `notify` and `refuse`, the two ways a notice reaches a thread.
"""

from __future__ import annotations

import logging

from koalabot.errors import RateLimitedError
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
#: A button that names an answer other than the one of the message it is on (an old button
#: whose answer was deleted, or a forged click): nothing is changed.
#: A battle's choices as the person who chose reads them back.
CHOICE_WORDS = {"a": "A is better", "b": "B is better", "tie": "a tie", "both_bad": "both bad"}
BATTLE_UNKNOWN = "I could not find that pair of answers any more, so I changed nothing."
NOT_THIS_ANSWER = "That button no longer belongs to an answer here, so I changed nothing."
VOTE_KEPT = {
    1: "Thanks! My database is away for a moment: I'll record your 👍 as soon as it is back.",
    -1: "Thanks! My database is away for a moment: I'll record your 👎 as soon as it is back.",
    0: "My database is away for a moment: I'll remove your vote as soon as it is back.",
}


def chose(choice: str) -> str:
    """The note to a person whose battle choice was recorded."""
    return f"Thanks, I noted your choice: {CHOICE_WORDS[choice]}."


def too_many_votes(exc: RateLimitedError) -> str:
    """Why a vote (or taking one back) in a burst was not recorded."""
    return (
        f"You are voting faster than I can keep up with (limit: {exc.limit} a minute), so this "
        f"one was not recorded. Please wait about {max(1, round(exc.retry_after))} s."
    )


#: How a person opts out (and back in) on each platform: fills ``{how_to_opt_out}`` in the
#: operator's notice (koalabot.config.DEFAULT_NOTICE has it).
HOW_TO_OPT_OUT = {
    "terminal": "to opt out, type /optout (and /optin to opt back in).",
    "slack": "to opt out, click Opt out below or send me optout in a direct message "
    "(optin to opt back in).",
    "discord": "to opt out, click Opt out below or use /optout (/optin to opt back in).",
}
OPT_OUT_ELSEWHERE = "to opt out, ask the operator to add your user id to the opt-out list."
OPTED_OUT = (
    "Opted out: I will keep answering you, but nothing you say or vote is exported as training "
    "data. Opt back in any time with optin."
)
OPTED_IN = "Opted in again: your conversations and votes may become training data."


def offers_opt_out(text: str, platform: str) -> bool:
    """Whether ``text`` carries the consent notice of ``platform`` (an Opt out button goes under
    it)."""
    how = HOW_TO_OPT_OUT.get(platform)
    return how is not None and how in text


def consent_notice(notice: str, platform: str) -> str:
    """The operator's first-answer notice, naming the platform's own way to opt out."""
    return notice.replace("{how_to_opt_out}", HOW_TO_OPT_OUT.get(platform, OPT_OUT_ELSEWHERE))


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
    if result.notice:
        return result.notice
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
    if result.notice:
        return result.notice
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
    "NOT_THIS_ANSWER",
    "NO_ANSWER",
    "ONLY_ATTACHMENTS",
    "OPTED_IN",
    "OPTED_OUT",
    "REGEN_UNKNOWN",
    "RETRY_BUTTON_HINT",
    "RETRY_HINTS",
    "SHUTTING_DOWN",
    "SPOOLED",
    "UNEXPECTED",
    "consent_notice",
    "cut_notice",
    "discord_vote_reply",
    "notify",
    "offers_opt_out",
    "refuse",
    "retry_notice",
    "shown_answer",
    "slack_vote_words",
    "too_many_votes",
]
