"""How Slack payloads become koalabot events, and how answers become Slack text (pure parts)."""

from __future__ import annotations

from typing import Any

from koalabot.events import ThreadKey
from koalabot_adapters.slack.buttons import ACTION_UP
from koalabot_adapters.slack.events import (
    button_vote,
    chat_message,
    is_human_post,
    reaction_vote,
    strip_mention,
)

BOT = "U0KOALABOT"


def event(**fields: Any) -> dict[str, Any]:
    base = {"type": "message", "channel": "C1", "user": "U1", "text": "hi", "ts": "1700.000200"}
    return {**base, **fields}


def test_a_mention_becomes_a_message_keyed_by_its_thread_and_both_delivery_ids() -> None:
    body = {"team_id": "T1", "event_id": "Ev9"}
    ev = event(text=f"<@{BOT}> what is   a koala?", thread_ts="1700.000100")

    msg = chat_message(body, ev, BOT)

    assert msg.where == ThreadKey("slack", "T1", "C1", "1700.000100")
    assert msg.text == "what is   a koala?"
    assert msg.dedupe_keys == ("slack:ev:Ev9", "slack:msg:C1:1700.000200")
    assert chat_message(body, event(), BOT).where.thread == "1700.000200"  # a root: its own ts


def test_mention_stripping_keeps_other_people_and_slack_escapes_are_undone() -> None:
    assert strip_mention(f"hey <@{BOT}|koala>, ask <@U2>", BOT) == "hey , ask <@U2>"
    body = {"team_id": "T1", "event_id": "Ev1"}
    assert chat_message(body, event(text="a &lt; b &amp;&amp; c &gt; d"), BOT).text == (
        "a < b && c > d"
    )
    files = chat_message(body, event(text="", subtype="file_share", files=[{}, {}]), BOT)
    assert files.attachments == 2


def test_only_people_posting_count_as_messages() -> None:
    assert is_human_post(event())
    assert is_human_post(event(subtype="thread_broadcast"))
    assert not is_human_post(event(bot_id="B2"))
    assert not is_human_post(event(subtype="bot_message"))
    assert not is_human_post(event(subtype="message_changed", user=None))
    assert not is_human_post(event(subtype="message_deleted", user=None))


def reaction(name: str, **fields: Any) -> dict[str, Any]:
    return {
        "type": "reaction_added",
        "user": "U1",
        "reaction": name,
        "item_user": BOT,
        "item": {"type": "message", "channel": "C1", "ts": "1700.000300"},
        **fields,
    }


def test_thumbs_reactions_on_the_bots_messages_are_votes() -> None:
    up = reaction_vote(reaction("thumbsup::skin-tone-3"), BOT)
    assert up is not None and (up.rating, up.platform_message_id, up.removed) == (
        1,
        "1700.000300",
        False,
    )
    down = reaction_vote(reaction("-1", type="reaction_removed"), BOT)
    assert down is not None and (down.rating, down.removed) == (-1, True)
    assert reaction_vote(reaction("tada"), BOT) is None
    assert reaction_vote(reaction("+1", item_user="U2"), BOT) is None  # someone else's message
    own = reaction_vote(reaction("+1", user=BOT), BOT)
    assert own is not None and own.is_bot


def test_a_button_click_names_the_answer_voter_and_thread() -> None:
    body = {
        "user": {"id": "U1"},
        "container": {"channel_id": "C1", "message_ts": "1700.000300"},
        "message": {"ts": "1700.000300", "thread_ts": "1700.000100"},
    }
    vote = button_vote(body, {"action_id": ACTION_UP, "value": "42"})
    assert vote is not None
    assert (vote.answer_id, vote.user, vote.channel, vote.thread_ts) == (
        42,
        "U1",
        "C1",
        "1700.000100",
    )
    assert button_vote(body, {"action_id": ACTION_UP, "value": "not a number"}) is None
