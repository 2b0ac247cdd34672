"""Votes from Slack: the 👍 👎 🔄 buttons under an answer (Block Kit actions whose value is the
answer id) and the private note a voter gets back."""

from __future__ import annotations

from slack_sdk.models.blocks import ActionsBlock, ButtonElement

from koalabot.events import FeedbackResult

ACTION_UP = "koalabot_vote_up"
ACTION_DOWN = "koalabot_vote_down"
ACTION_REGENERATE = "koalabot_regenerate"


def feedback_buttons(answer_id: int) -> ActionsBlock:
    """The 👍 / 👎 / 🔄 row under a finished answer."""
    value = str(answer_id)
    return ActionsBlock(
        block_id=f"koalabot_feedback_{answer_id}",
        elements=[
            ButtonElement(text="👍", action_id=ACTION_UP, value=value),
            ButtonElement(text="👎", action_id=ACTION_DOWN, value=value),
            ButtonElement(text="🔄 Regenerate", action_id=ACTION_REGENERATE, value=value),
        ],
    )


def vote_words(result: FeedbackResult) -> str:
    """The ephemeral note a voter sees once a vote is handled."""
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
