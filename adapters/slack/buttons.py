"""Votes from Slack: the 👍 👎 🔄 buttons under an answer (Block Kit actions whose value is the
answer id) and the private note a voter gets back."""

from __future__ import annotations

from slack_sdk.models.blocks import ActionsBlock, ButtonElement

ACTION_UP = "koalabot_vote_up"
ACTION_DOWN = "koalabot_vote_down"
ACTION_REGENERATE = "koalabot_regenerate"


def retry_button(answer_id: int) -> ActionsBlock:
    """The 🔄 under a failure notice: the regenerate action, for the failed answer."""
    again = ButtonElement(text="🔄 Try again", action_id=ACTION_REGENERATE, value=str(answer_id))
    return ActionsBlock(block_id=f"koalabot_retry_{answer_id}", elements=[again])


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
