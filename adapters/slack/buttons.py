"""Votes from Slack: the 👍 👎 🔄 buttons under an answer (Block Kit actions whose value is the
answer id) and the private note a voter gets back; the Opt out button under the consent notice."""

from __future__ import annotations

from slack_sdk.models.blocks import ActionsBlock, ButtonElement

ACTION_UP = "koalabot_vote_up"
ACTION_DOWN = "koalabot_vote_down"
ACTION_REGENERATE = "koalabot_regenerate"
ACTION_OPT_OUT = "koalabot_optout"
#: A battle's one choice: one action id per choice (Slack wants them unique in a block), the
#: value "<answer A id>:<answer B id>".
ACTION_CHOICE = "koalabot_battle_"
CHOICE_LABELS = {"a": "A is better", "b": "B is better", "tie": "Tie", "both_bad": "Both bad"}


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


def choice_buttons(a_id: int, b_id: int) -> ActionsBlock:
    """Under a battle's answer B: A is better / B is better / Tie / Both bad."""
    value = f"{a_id}:{b_id}"
    return ActionsBlock(
        block_id=f"koalabot_battle_{a_id}_{b_id}",
        elements=[
            ButtonElement(text=label, action_id=ACTION_CHOICE + choice, value=value)
            for choice, label in CHOICE_LABELS.items()
        ],
    )


def parse_choice(action_id: str, value: str) -> tuple[int, int, str] | None:
    """(answer A id, answer B id, choice) of a click on a battle's choice; None if malformed."""
    choice = action_id.removeprefix(ACTION_CHOICE)
    a, _, b = value.partition(":")
    if choice not in CHOICE_LABELS or not (a.isdigit() and b.isdigit()):
        return None
    return int(a), int(b), choice


def opt_out_button() -> ActionsBlock:
    """Under the consent notice of a thread's first answer: opt out of training data."""
    return ActionsBlock(
        block_id="koalabot_consent",
        elements=[ButtonElement(text="Opt out", action_id=ACTION_OPT_OUT, value="optout")],
    )
