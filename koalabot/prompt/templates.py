"""Koala prompt templates as data, and the one function that renders a thread with them.

The default ``koala`` template reproduces EasyLM's Koala server byte for byte; ``koala-fastchat``
reproduces FastChat's ``koala_v1`` (reference/tgi-and-koala.md §3). Both are plain data: the
renderer has no per-template branches.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from koalabot.errors import InvalidConversationError

Role = Literal["user", "assistant"]
ROLES: tuple[Role, ...] = ("user", "assistant")


@dataclass(frozen=True)
class Template:
    """How one model family wants a conversation laid out; rendering is only concatenation."""

    name: str
    #: Opens every prompt, once.
    prepend: str
    #: A user turn is ``user_prefix + text + user_suffix``.
    user_prefix: str
    user_suffix: str
    #: A past answer is ``assistant_prefix + assistant_answer_sep + text + assistant_suffix``;
    #: the prompt ends with a bare ``assistant_prefix`` for the answer to come.
    assistant_prefix: str
    assistant_answer_sep: str
    assistant_suffix: str
    #: Stop sequences to send with a generation request.
    stop: tuple[str, ...]


TEMPLATES: dict[str, Template] = {
    # EasyLM docs/koala.md serving flags: no space between "GPT:" and a past answer.
    "koala": Template(
        name="koala",
        prepend="BEGINNING OF CONVERSATION: ",
        user_prefix="USER: ",
        user_suffix=" ",
        assistant_prefix="GPT:",
        assistant_answer_sep="",
        assistant_suffix="</s>",
        stop=("</s>", "USER:"),
    ),
    # FastChat koala_v1 (ADD_COLON_TWO, sep " ", sep2 "</s>"): "GPT: <answer></s>".
    "koala-fastchat": Template(
        name="koala-fastchat",
        prepend="BEGINNING OF CONVERSATION: ",
        user_prefix="USER: ",
        user_suffix=" ",
        assistant_prefix="GPT:",
        assistant_answer_sep=" ",
        assistant_suffix="</s>",
        stop=("</s>", "USER:"),
    ),
}


@dataclass(frozen=True)
class Turn:
    """One message of a thread as the model sees it."""

    role: Role
    content: str


# Role markers, in any letter case and with any whitespace before the colon: Koala's turns share
# one line, so a marker anywhere in a message could start a forged turn. The colon becomes a
# FULLWIDTH COLON (U+FF1A): still readable ("USER：") but no longer the token sequence the model
# was trained on, nor a stop sequence. LLaMA's tokenizer does no NFKC normalisation, so the
# change survives tokenization. The replacement holds no ASCII colon, so it can neither form a
# new marker with its neighbours ("USUSER:ER:") nor be changed again (idempotent).
_MARKER = re.compile(r"(USER|GPT|An\s+Unhelpful\s+Answer)(\s*):", re.IGNORECASE)
#: The last letters of every marker, casefolded as IGNORECASE compares them ("uſer" is "user").
_MARKER_TAILS = frozenset({"ser", "gpt", "wer"})
# LLaMA's BOS/EOS strings, which TGI's tokenizer turns into the special ids: "</s>" -> "< /s>".
_SPECIAL = re.compile(r"<(/?s>)", re.IGNORECASE)


def neutralise(text: str) -> str:
    """Make every role marker and ``<s>``/``</s>`` in ``text`` harmless, keeping it readable.

    Text without a marker comes back unchanged, and ``neutralise(neutralise(t)) ==
    neutralise(t)``.
    """
    # Every special token starts with "<", every marker ends in an ASCII colon.
    if "<" in text:
        text = _SPECIAL.sub(r"< \1", text)
    if ":" in text and _may_hold_marker(text):
        text = _MARKER.sub(r"\1\2：", text)
    return text


def _may_hold_marker(text: str) -> bool:
    """Whether a colon in ``text`` follows a marker's last letters (False: no marker is there).

    Hand-written around str methods: the regex reads every character through its alternation,
    several microseconds on a paragraph, where most texts hold a few colons, none after those
    letters (an export neutralises millions of messages).
    """
    at = text.find(":")
    while at != -1:
        before = text[max(0, at - 16) : at].rstrip()
        if before[-3:].casefold() in _MARKER_TAILS or (not before and at > 16):
            return True  # a marker's letters, or more space than looked at: the regex decides
        at = text.find(":", at + 1)
    return False


def clean(text: str) -> str:
    """A message exactly as it appears inside a prompt: stripped, then neutralised."""
    return neutralise(text.strip())


def render_turn(turn: Turn, template: Template) -> str:
    """One past turn with its markers; a prompt is these pieces between prepend and prefix."""
    if turn.role == "user":
        return template.user_prefix + clean(turn.content) + template.user_suffix
    return (
        template.assistant_prefix
        + template.assistant_answer_sep
        + clean(turn.content)
        + template.assistant_suffix
    )


def render(turns: Iterable[Turn], template: Template) -> str:
    """The exact prompt string for the next answer (it ends with the assistant prefix)."""
    body = "".join(render_turn(turn, template) for turn in turns)
    return template.prepend + body + template.assistant_prefix


def turns_from_data(data: Any) -> list[Turn]:
    """Turns from JSON-like data: a list of ``{"role": "user"|"assistant", "content": str}``.

    The result is a thread awaiting an answer, so it must end with a user turn. Other keys in
    an item are ignored. Raises InvalidConversationError naming the first problem.
    """
    if not isinstance(data, list):
        raise InvalidConversationError(f"expected a JSON list of turns, got {_json_kind(data)}")
    if not data:
        raise InvalidConversationError("the conversation is empty: give at least one user turn")
    turns = [_turn_from_item(i, item) for i, item in enumerate(data)]
    if turns[-1].role != "user":
        raise InvalidConversationError(
            f"the last turn (item {len(turns) - 1}) is from the assistant; "
            "a prompt asks for the next answer, so the conversation must end with a user turn"
        )
    return turns


def _turn_from_item(index: int, item: Any) -> Turn:
    if not isinstance(item, Mapping):
        raise InvalidConversationError(
            f'item {index} is {_json_kind(item)}, expected an object with "role" and "content"'
        )
    role, content = item.get("role"), item.get("content")
    if role not in ROLES:
        raise InvalidConversationError(
            f"item {index} has role {role!r}; expected 'user' or 'assistant'"
        )
    if "content" not in item:
        raise InvalidConversationError(f'item {index} has no "content"')
    if not isinstance(content, str):
        raise InvalidConversationError(
            f"item {index} has {_json_kind(content)} as content, expected text"
        )
    try:
        content.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidConversationError(
            f"item {index} content is not valid Unicode (it holds a lone surrogate)"
        ) from None
    return Turn(role, content)


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, Sequence):
        return "a list"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__


__all__ = [
    "ROLES",
    "TEMPLATES",
    "Role",
    "Template",
    "Turn",
    "clean",
    "neutralise",
    "render",
    "render_turn",
    "turns_from_data",
]
