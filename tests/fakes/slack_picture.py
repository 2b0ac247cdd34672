"""A picture of one Slack thread exactly as the fake Slack holds it: an HTML page in the shape of
Slack's thread pane, for a browser test to screenshot (the README's battle picture).

Everything drawn comes from the fake: the messages it stored from ``chat.postMessage`` and
``chat.update`` (their blocks when they have any, as Slack shows blocks instead of ``text``), the
ephemeral notes of ``chat.postEphemeral``, and the names it told the app (``auth.test``, the
people and channel of the interactions it delivered). Nothing is made up here, so a picture that
looks wrong means the bot posted something wrong.

Trade-offs: it is an approximation of Slack, not a copy — no avatars, no hover menus, and only
the blocks and mrkdwn the bot uses (section, markdown, context, actions, context_actions;
``*bold*``, ``_italic_``, ``~strike~``, `` `code` ``, mentions and links). A block of another
type is drawn as ``[type block]``, so that a new kind shows up in the picture instead of
silently vanishing. Times are the messages' ``ts`` in UTC.
"""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime
from typing import Any

from tests.fakes.slack import Ephemeral, FakeSlack, Message, unescape

#: Slack's special tokens in message text: <@U123>, <#C123|name>, <!here>, <url|label>, <url>.
_TOKEN = re.compile(r"<([^<>\n]*)>")
_CODE = re.compile(r"`([^`\n]+)`")
_STYLES = (
    (re.compile(r"\*\*([^*\n]+)\*\*"), "b"),  # a markdown block's bold
    (re.compile(r"(?<![\w*])\*([^*\n]+)\*(?![\w*])"), "b"),
    (re.compile(r"(?<!\w)_([^_\n]+)_(?!\w)"), "i"),
    (re.compile(r"(?<!\w)~([^~\n]+)~(?!\w)"), "s"),
)

_CSS = """
body { margin: 0 0 8px; background: #fff; color: #1d1c1d;
  font: 15px/1.46668 "Lato", "Liberation Sans", "Helvetica Neue", Arial, sans-serif,
  "Noto Color Emoji"; }
header { display: flex; align-items: baseline; gap: 8px; padding: 12px 20px;
  border-bottom: 1px solid #dddddd; }
header .title { font-size: 18px; font-weight: 900; }
header .channel { color: #616061; font-size: 13px; }
.message { padding: 8px 20px; }
.who { font-weight: 900; }
.app { background: rgba(29, 28, 29, .13); color: rgba(29, 28, 29, .7); font-size: 10px;
  font-weight: 700; padding: 1px 3px; border-radius: 2px; vertical-align: 2px; margin-left: 4px; }
.time { color: #616061; font-size: 12px; margin-left: 6px; }
.text { word-wrap: break-word; }
.text + .text { margin-top: 4px; }
.mention { background: rgba(29, 155, 209, .1); color: #1264a3; border-radius: 3px; padding: 0 2px; }
code { font: 12px "Liberation Mono", monospace; color: #e01e5a; background: rgba(29, 28, 29, .04);
  border: 1px solid rgba(29, 28, 29, .13); border-radius: 3px; padding: 1px 3px; }
a { color: #1264a3; text-decoration: none; }
.context { color: #616061; font-size: 12px; margin-top: 4px; }
.actions { display: flex; flex-wrap: wrap; gap: 8px; margin-top: 8px; }
.button { display: inline-flex; align-items: center; height: 28px; padding: 0 12px;
  border: 1px solid rgba(29, 28, 29, .3); border-radius: 4px; font-size: 13px; font-weight: 700;
  background: #fff; white-space: nowrap; }
.replies { display: flex; align-items: center; gap: 12px; padding: 4px 20px; color: #616061;
  font-size: 13px; }
.replies::after { content: ""; flex: 1; border-top: 1px solid #dddddd; }
.ephemeral { background: #f8f8f8; }
.only-you { color: #616061; font-size: 12px; }
.unknown { color: #616061; font-style: italic; }
"""


def thread_page(slack: FakeSlack, channel: str, thread_ts: str, viewer: str) -> str:
    """The thread pane of ``thread_ts`` as ``viewer`` sees it: the root, its replies, and the
    ephemeral notes to ``viewer`` in the thread, in ``ts`` order."""
    names = _names(slack)
    root, *replies = slack.thread(channel, thread_ts)
    notes = [
        e
        for e in slack.ephemerals
        if (e.channel, e.thread_ts, e.user) == (channel, thread_ts, viewer)
    ]
    later: list[Message | Ephemeral] = [*replies, *notes]
    later.sort(key=lambda m: _ts_order(m.ts))
    count = f"{len(replies)} {'reply' if len(replies) == 1 else 'replies'}"
    rows = [
        _message(root, names),
        f'<div class="replies">{count}</div>',
        *(_message(m, names) if isinstance(m, Message) else _note(m, slack, names) for m in later),
    ]
    channel_name = names.get(channel, channel)
    return (
        f'<!doctype html><html><head><meta charset="utf-8"><style>{_CSS}</style></head><body>'
        f'<header><span class="title">Thread</span><span class="channel">'
        f"#{html.escape(channel_name)}</span></header>{''.join(rows)}</body></html>"
    )


def _names(slack: FakeSlack) -> dict[str, str]:
    """User and channel ids to the names the fake gave: the bot's in ``auth.test``, people's in
    ``users.info`` and in the interactions it delivered, channels' in those interactions."""
    names: dict[str, str] = {}
    for call in slack.calls_to("auth.test"):
        if call.response.get("ok"):
            names[call.response["user_id"]] = call.response["user"]
    for call in slack.calls_to("users.info"):
        user = call.response.get("user") or {}
        if user.get("id") and user.get("name"):
            names[user["id"]] = user["name"]
    for body, _ in slack.deliveries:
        for key in ("user", "channel"):
            part = body.get(key)
            if isinstance(part, dict) and part.get("id") and part.get("name"):
                names[part["id"]] = part["name"]
    return names


def _ts_order(ts: str) -> tuple[int, ...]:
    return tuple(int(part) for part in ts.split("."))


def _heading(who: str, ts: str, bot: bool) -> str:
    time = datetime.fromtimestamp(float(ts), UTC).strftime("%H:%M")
    badge = '<span class="app">APP</span>' if bot else ""
    who_html = f'<span class="who">{html.escape(who)}</span>'
    return f'<div>{who_html}{badge}<span class="time">{time}</span></div>'


def _message(msg: Message, names: dict[str, str]) -> str:
    body = [_block(b, names) for b in msg.blocks] if msg.blocks else [_text(msg.text, names)]
    heading = _heading(names.get(msg.user, msg.user), msg.ts, msg.bot_id is not None)
    return f'<div class="message" data-ts="{msg.ts}">{heading}{"".join(body)}</div>'


def _note(note: Ephemeral, slack: FakeSlack, names: dict[str, str]) -> str:
    """An ephemeral note: chat.postEphemeral with the bot token posts it as the bot."""
    label = '<div class="only-you">👁 Only visible to you</div>'
    heading = _heading(names.get(slack.bot_user_id, slack.bot_user_id), note.ts, bot=True)
    text = _text(note.text, names)
    return f'<div class="message ephemeral" data-ts="{note.ts}">{label}{heading}{text}</div>'


def _block(block: dict[str, Any], names: dict[str, str]) -> str:
    kind = block.get("type")
    if kind == "section":
        return _text_object(block.get("text") or {}, names, "text")
    if kind == "markdown":
        return _text(str(block.get("text", "")), names)
    if kind == "context":
        parts = [_context_element(e, names) for e in block.get("elements", [])]
        return f'<div class="context">{" ".join(parts)}</div>'
    if kind == "actions":
        return _buttons(_button_texts(e) for e in block.get("elements", []))
    if kind == "context_actions":
        return _buttons(_context_action_texts(e) for e in block.get("elements", []))
    return f'<div class="unknown">[{html.escape(str(kind))} block]</div>'


def _text_object(obj: dict[str, Any], names: dict[str, str], css: str) -> str:
    raw = str(obj.get("text", ""))
    if obj.get("type") == "mrkdwn":
        return _text(raw, names, css)
    return f'<div class="{css}">{html.escape(raw).replace(chr(10), "<br>")}</div>'


def _context_element(element: dict[str, Any], names: dict[str, str]) -> str:
    if element.get("type") == "image":
        return html.escape(str(element.get("alt_text", "")))
    return _text_object(element, names, "context-part")


def _button_texts(element: dict[str, Any]) -> list[str]:
    text = element.get("text") or {}
    return [str(text.get("text", ""))] if element.get("type") == "button" else []


def _context_action_texts(element: dict[str, Any]) -> list[str]:
    """feedback_buttons draw their two buttons, an icon_button its text."""
    if element.get("type") == "feedback_buttons":
        sides = (element.get(side) or {} for side in ("positive_button", "negative_button"))
        return [str((side.get("text") or {}).get("text", "")) for side in sides]
    return [str((element.get("text") or {}).get("text", ""))]


def _buttons(groups: Any) -> str:
    spans = [f'<span class="button">{html.escape(t)}</span>' for group in groups for t in group]
    return f'<div class="actions">{"".join(spans)}</div>'


def _text(raw: str, names: dict[str, str], css: str = "text") -> str:
    """Slack mrkdwn (with Slack's escaping) as HTML."""
    out: list[str] = []
    last = 0
    for token in _TOKEN.finditer(raw):
        out.append(_styled(raw[last : token.start()]))
        out.append(_token(token.group(1), names))
        last = token.end()
    out.append(_styled(raw[last:]))
    return f'<div class="{css}">{"".join(out).replace(chr(10), "<br>")}</div>'


def _token(inside: str, names: dict[str, str]) -> str:
    target, _, label = inside.partition("|")
    if target.startswith("@"):
        who = names.get(target[1:], label or target[1:])
        return f'<span class="mention">@{html.escape(who)}</span>'
    if target.startswith("#"):
        where = label or names.get(target[1:], target[1:])
        return f'<span class="mention">#{html.escape(where)}</span>'
    if target.startswith("!"):
        return f'<span class="mention">@{html.escape(label or target[1:])}</span>'
    shown = html.escape(unescape(label or target))
    return f'<a href="{html.escape(unescape(target))}">{shown}</a>'


def _styled(raw: str) -> str:
    """Escaped Slack text with its inline styles; nothing is styled inside `code`."""
    pieces = _CODE.split(raw)
    out: list[str] = []
    for i, piece in enumerate(pieces):
        text = html.escape(unescape(piece))
        if i % 2:
            out.append(f"<code>{text}</code>")
            continue
        for pattern, tag in _STYLES:
            text = pattern.sub(rf"<{tag}>\1</{tag}>", text)
        out.append(text)
    return "".join(out)
