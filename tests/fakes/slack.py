"""A fake Slack on real loopback sockets, for driving the real slack-bolt app end to end.

It speaks the wire protocol of /work/shared/reference/slack-and-discord.md §1:

* the Web API under ``/api/<method>`` (JSON, form and query-string bodies, as slack_sdk sends
  them; ``Authorization: Bearer`` checked; 429 with an integer ``Retry-After`` on demand);
* a Socket Mode WebSocket (``apps.connections.open`` → ``hello`` → envelopes → acks, recorded);
* a signer that POSTs signed Events API bodies and form-encoded ``block_actions`` to an app's
  HTTP endpoint, with ``X-Slack-Retry-Num`` on demand;
* Slack's text streaming (``chat.startStream`` / ``appendStream`` / ``stopStream``) with each
  stream's state, and the ``context_actions`` block (``feedback_buttons``, ``icon_button``) with
  the validation Slack documents; ``refuse_streaming`` makes Slack turn the streaming API down.

It keeps what a user would see — channels, messages with their ``ts`` and ``thread_ts``, edits,
buttons, reactions, ephemeral notes, assistant status — and echoes the bot's own posts and edits
back as events, the way Slack does for an app subscribed to ``message.*``.

Typical use::

    async with FakeSlack() as slack:
        ...  # start the app with slack.api_url; HTTP mode: slack.events_url = app URL
        root = await slack.user_posts(f"<@{slack.bot_user_id}> hi")
        answer = await slack.wait_for(lambda: slack.final_answer(root.channel, root.ts))
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import itertools
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlencode

import aiohttp
from aiohttp import web

T = TypeVar("T")

TEXT_LIMIT = 40_000  # Slack truncates/rejects longer `text`
SECTION_LIMIT = 3_000  # section block text
MARKDOWN_LIMIT = 12_000  # markdown block text
BLOCKS_LIMIT = 50
BUTTON_TEXT_LIMIT = 75
BUTTON_VALUE_LIMIT = 2_000
ACTION_ID_LIMIT = 255
BLOCK_ID_LIMIT = 255
# https://docs.slack.dev/reference/methods/chat.startStream (and appendStream, stopStream):
# "markdown_text ... Limit this field to 12,000 characters."
STREAM_TEXT_LIMIT = 12_000
# https://docs.slack.dev/reference/block-kit/blocks/context-actions-block: "Maximum number of
# items is 5"; feedback buttons and icon buttons only.
CONTEXT_ACTIONS_LIMIT = 5
ACCESSIBILITY_LABEL_LIMIT = 75
# Chunk types of chat.appendStream's `chunks` (docs.slack.dev/reference/methods/chat.appendStream).
CHUNK_TYPES = {"markdown_text", "task_update", "plan_update", "blocks"}
_APP_TOKEN_METHODS = {"apps.connections.open"}


@dataclass
class ApiCall:
    """One Web API request as the fake received it."""

    method: str
    args: dict[str, Any]
    content_type: str
    token: str | None
    status: int
    response: dict[str, Any]


@dataclass
class Message:
    """A message in a channel, as users see it now (``edits`` keeps each chat.update's text)."""

    channel: str
    ts: str
    user: str
    text: str
    thread_ts: str | None = None
    blocks: list[dict[str, Any]] = field(default_factory=list)
    bot_id: str | None = None
    subtype: str | None = None
    edits: list[str] = field(default_factory=list)
    reactions: dict[str, list[str]] = field(default_factory=dict)
    #: ``in_progress`` while chat.startStream's message streams, ``completed`` once stopped.
    streaming_state: str | None = None

    @property
    def shown(self) -> str:
        """The body a user reads: the text blocks if there are any, else ``text``, with
        Slack's ``&amp;``/``&lt;``/``&gt;`` shown as the characters they stand for."""
        parts = [_block_text(b) for b in self.blocks if _block_text(b)]
        return unescape("\n".join(parts) if parts else self.text)

    @property
    def buttons(self) -> list[dict[str, Any]]:
        """The button elements of the message's actions blocks."""
        return [
            element
            for block in self.blocks
            if block.get("type") == "actions"
            for element in block.get("elements", [])
            if element.get("type") == "button"
        ]

    @property
    def context_actions(self) -> list[dict[str, Any]]:
        """The feedback_buttons / icon_button elements of the message's context_actions blocks."""
        return [
            element
            for block in self.blocks
            if block.get("type") == "context_actions"
            for element in block.get("elements", [])
        ]

    def as_payload(self) -> dict[str, Any]:
        """The message object as Slack embeds it in events and interaction payloads."""
        data: dict[str, Any] = {"type": "message", "ts": self.ts, "user": self.user}
        data["text"] = self.text
        if self.blocks:
            data["blocks"] = self.blocks
        if self.bot_id:
            data["bot_id"] = self.bot_id
        if self.thread_ts:
            data["thread_ts"] = self.thread_ts
        if self.subtype:
            data["subtype"] = self.subtype
        if self.streaming_state:
            data["streaming_state"] = self.streaming_state
        return data


@dataclass
class Ephemeral:
    """A message only one user sees (chat.postEphemeral)."""

    channel: str
    user: str
    text: str
    thread_ts: str | None
    ts: str


@dataclass
class Delivery:
    """How the app answered one delivered request (HTTP status and body, or a Socket Mode ack)."""

    status: int
    body: str = ""
    ack: dict[str, Any] | None = None


def unescape(text: str) -> str:
    """What Slack displays for escaped message text."""
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def _block_text(block: dict[str, Any]) -> str:
    if block.get("type") == "markdown":
        return str(block.get("text", ""))
    if block.get("type") == "section":
        text = block.get("text") or {}
        return str(text.get("text", "")) if isinstance(text, dict) else ""
    return ""


class SlackApiFault(Exception):
    """A Web API call that Slack would answer with ``ok: false``."""

    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.error = error


def channel_type(channel: str) -> str:
    """Slack's channel_type from the id's first letter (C public, G private, D direct)."""
    return {"C": "channel", "G": "group", "D": "im"}.get(channel[:1], "channel")


class FakeSlack:
    """Slack's Web API, Socket Mode and Events API delivery on 127.0.0.1 (ephemeral port)."""

    def __init__(
        self,
        *,
        bot_token: str = "xoxb-1-fake",
        app_token: str = "xapp-1-fake",
        signing_secret: str = "fake-signing-secret",
        team_id: str = "T0KOALA",
        bot_user_id: str = "U0KOALABOT",
        bot_id: str = "B0KOALABOT",
        app_id: str = "A0KOALA",
        echo_bot_events: bool = True,
    ) -> None:
        self.bot_token = bot_token
        self.app_token = app_token
        self.signing_secret = signing_secret
        self.team_id = team_id
        self.bot_user_id = bot_user_id
        self.bot_id = bot_id
        self.app_id = app_id
        self.echo_bot_events = echo_bot_events
        #: Where HTTP-mode deliveries go (the app's ``/slack/events`` URL); None: Socket Mode.
        self.events_url: str | None = None
        #: Other apps' bot users in the workspace: ``users.info`` says ``is_bot`` for them.
        self.bot_users: set[str] = set()
        #: Bot token scopes the app was installed without (methods needing one: missing_scope).
        self.missing_scopes: set[str] = set()
        #: An error code chat.startStream answers with (``channel_type_not_supported``,
        #: ``invalid_arguments``, ``missing_scope``, ``unknown_method`` …): Slack refusing the
        #: streaming API for a workspace or surface. None: streaming works.
        self.refuse_streaming: str | None = None
        #: The icon names icon_button takes (None: any). The icon button reference once said
        #: "The trash icon is the only icon available at this time"; set {"trash"} to be that.
        self.icon_names: set[str] | None = None

        self.calls: list[ApiCall] = []
        self.messages: dict[str, list[Message]] = {}
        self.ephemerals: list[Ephemeral] = []
        self.statuses: list[tuple[str, str, str]] = []  # (channel, thread_ts, status)
        self.suggested_prompts: list[dict[str, Any]] = []
        self.titles: list[tuple[str, str, str]] = []
        self.acks: list[dict[str, Any]] = []
        self.deliveries: list[tuple[dict[str, Any], Delivery]] = []
        self.socket_connections = 0
        self.response_url_posts: list[dict[str, Any]] = []
        #: What people could see when: (time.monotonic(), channel, ts, text) per post and edit.
        self.timeline: list[tuple[float, str, str, str]] = []

        self._rate_limits: dict[str, list[int]] = {}  # method -> [remaining, retry_after]
        self._tickets: set[str] = set()
        self._sockets: list[web.WebSocketResponse] = []
        self._pending_acks: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._seq = itertools.count(1)
        self._changed: asyncio.Condition | None = None
        self._echo_tasks: set[asyncio.Task[Any]] = set()
        self._runner: web.AppRunner | None = None
        self._http: aiohttp.ClientSession | None = None
        self.port = 0

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> FakeSlack:
        """Listen on 127.0.0.1 with an ephemeral port."""
        self._changed = asyncio.Condition()
        app = web.Application()
        app.router.add_post("/api/{method}", self._api)
        app.router.add_get("/api/{method}", self._api)
        app.router.add_get("/link/", self._socket)
        app.router.add_post("/actions/{rest:.*}", self._response_url)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        self._http = aiohttp.ClientSession()
        return self

    async def stop(self) -> None:
        """Close sockets, finish echo deliveries and stop listening."""
        for task in list(self._echo_tasks):
            task.cancel()
        await asyncio.gather(*self._echo_tasks, return_exceptions=True)
        for ws in list(self._sockets):
            await ws.close()
        if self._http is not None:
            await self._http.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> FakeSlack:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def api_url(self) -> str:
        """The Web API base URL to give slack_sdk (``base_url``)."""
        return f"http://127.0.0.1:{self.port}/api/"

    # --- what tests drive ------------------------------------------------------------------

    def rate_limit(self, method: str, *, times: int = 1, retry_after: int = 1) -> None:
        """Answer the next ``times`` calls of ``method`` with HTTP 429 and ``Retry-After``."""
        self._rate_limits[method] = [times, retry_after]

    def new_ts(self) -> str:
        """A fresh, increasing message timestamp like Slack's (``seconds.micro``)."""
        return f"{int(time.time())}.{next(self._seq):06d}"

    async def user_posts(
        self,
        text: str,
        *,
        channel: str = "C0GENERAL",
        user: str = "U0ALICE",
        thread_ts: str | None = None,
        retry_num: int | None = None,
        deliver: bool = True,
    ) -> Message:
        """A person posts: store it and deliver ``message`` (and ``app_mention`` if it mentions
        the bot, outside DMs) concurrently, as Slack does — two events, one (channel, ts)."""
        msg = Message(channel, self.new_ts(), user, text, thread_ts=thread_ts)
        await self._store(msg)
        if not deliver:
            return msg
        events = [self.message_event(msg)]
        if f"<@{self.bot_user_id}>" in text and channel_type(channel) != "im":
            events.append(self.mention_event(msg))
        await asyncio.gather(*(self.deliver_event(e, retry_num=retry_num) for e in events))
        return msg

    def message_event(self, msg: Message) -> dict[str, Any]:
        """The ``message`` event Slack sends for a person's post."""
        event: dict[str, Any] = {
            "type": "message",
            "channel": msg.channel,
            "user": msg.user,
            "text": msg.text,
            "ts": msg.ts,
            "event_ts": msg.ts,
            "channel_type": channel_type(msg.channel),
            "client_msg_id": str(uuid.uuid4()),
            "team": self.team_id,
        }
        if msg.thread_ts:
            event["thread_ts"] = msg.thread_ts
            event["parent_user_id"] = self._find(msg.channel, msg.thread_ts).user
        return event

    def mention_event(self, msg: Message) -> dict[str, Any]:
        """The ``app_mention`` event Slack sends besides ``message`` when the bot is mentioned."""
        event: dict[str, Any] = {
            "type": "app_mention",
            "user": msg.user,
            "text": msg.text,
            "ts": msg.ts,
            "channel": msg.channel,
            "event_ts": msg.ts,
            "client_msg_id": str(uuid.uuid4()),
            "team": self.team_id,
        }
        if msg.thread_ts:
            event["thread_ts"] = msg.thread_ts
        return event

    def event_body(self, event: dict[str, Any], event_id: str | None = None) -> dict[str, Any]:
        """The Events API envelope around one event (the HTTP body / Socket Mode payload)."""
        return {
            "token": "fake-verification-token",
            "team_id": self.team_id,
            "api_app_id": self.app_id,
            "event": event,
            "type": "event_callback",
            "event_id": event_id or f"Ev{uuid.uuid4().hex[:10].upper()}",
            "event_time": int(time.time()),
            "authorizations": [
                {
                    "enterprise_id": None,
                    "team_id": self.team_id,
                    "user_id": self.bot_user_id,
                    "is_bot": True,
                    "is_enterprise_install": False,
                }
            ],
            "is_ext_shared_channel": False,
            "event_context": f"4-{uuid.uuid4().hex}",
        }

    async def deliver_event(
        self, event: dict[str, Any], *, event_id: str | None = None, retry_num: int | None = None
    ) -> Delivery:
        """Deliver one event in a fresh envelope."""
        body = self.event_body(event, event_id)
        return await self.deliver(body, kind="events_api", retry_num=retry_num)

    async def redeliver(self, body: dict[str, Any], *, retry_num: int = 1) -> Delivery:
        """Deliver an event body again, as Slack's retry number ``retry_num``."""
        return await self.deliver(body, kind="events_api", retry_num=retry_num)

    async def deliver(
        self,
        body: dict[str, Any],
        *,
        kind: str = "events_api",
        retry_num: int | None = None,
        retry_reason: str = "http_timeout",
    ) -> Delivery:
        """Send one request to the app over Socket Mode if it is connected, else over HTTP
        to ``events_url``; with neither, nothing listens (status 0)."""
        if not self._sockets and not self.events_url:
            result = Delivery(0, "no app listening")
        elif self._sockets:
            result = await self._send_envelope(body, kind, retry_num, retry_reason)
        else:
            raw, content_type = _encode(body, kind)
            headers = {"X-Slack-Retry-Num": str(retry_num)} if retry_num else {}
            if retry_num:
                headers["X-Slack-Retry-Reason"] = retry_reason
            result = await self.post_signed(raw, content_type, headers=headers)
        self.deliveries.append((body, result))
        return result

    async def post_signed(
        self,
        raw: bytes,
        content_type: str = "application/json",
        *,
        headers: dict[str, str] | None = None,
        timestamp: int | None = None,
        secret: str | None = None,
    ) -> Delivery:
        """POST a body to ``events_url`` signed like Slack (v0 HMAC-SHA256 of ``v0:ts:body``)."""
        assert self.events_url, "set events_url to the app's /slack/events URL first"
        assert self._http is not None
        stamp = str(int(time.time()) if timestamp is None else timestamp)
        sent = {
            "Content-Type": content_type,
            "X-Slack-Request-Timestamp": stamp,
            "X-Slack-Signature": sign(secret or self.signing_secret, stamp, raw),
            **(headers or {}),
        }
        async with self._http.post(self.events_url, data=raw, headers=sent) as resp:
            return Delivery(resp.status, await resp.text())

    async def user_reacts(
        self,
        message: Message,
        reaction: str = "+1",
        *,
        user: str = "U0ALICE",
        removed: bool = False,
    ) -> Delivery:
        """A person adds (or removes) an emoji reaction on a message."""
        voters = message.reactions.setdefault(reaction, [])
        if removed and user in voters:
            voters.remove(user)
        elif not removed and user not in voters:
            voters.append(user)
        await self._notify()
        return await self.deliver_event(self._reaction_event(message, reaction, user, removed))

    def _reaction_event(
        self, message: Message, reaction: str, user: str, removed: bool
    ) -> dict[str, Any]:
        return {
            "type": "reaction_removed" if removed else "reaction_added",
            "user": user,
            "reaction": reaction,
            "item_user": message.user,
            "item": {
                "type": "message",
                "channel": message.channel,
                "ts": message.ts,
                "channel_type": channel_type(message.channel),
            },
            "event_ts": self.new_ts(),
        }

    async def click(self, message: Message, action_id: str, *, user: str = "U0ALICE") -> Delivery:
        """A person clicks the message's button ``action_id`` (it must be there)."""
        button = next((b for b in message.buttons if b.get("action_id") == action_id), None)
        if button is None:
            raise AssertionError(f"no button {action_id!r} on message {message.ts}: {message}")
        action = {
            "action_id": action_id,
            "block_id": _block_id_of(message, button),
            "text": button.get("text", {}),
            "value": button.get("value", ""),
            "type": "button",
            "action_ts": self.new_ts(),
        }
        return await self.deliver(self.block_actions(message, action, user), kind="interactive")

    async def click_feedback(
        self, message: Message, *, positive: bool = True, user: str = "U0ALICE"
    ) -> Delivery:
        """A person clicks 👍 (``positive``) or 👎 of the message's ``feedback_buttons``.

        Slack sends one action for the element: its ``action_id``, ``type: feedback_buttons`` and
        the clicked button's ``value`` and ``text`` (bolt-js ``FeedbackButtonsAction``,
        https://docs.slack.dev/tools/bolt-js/reference/interfaces/FeedbackButtonsAction).
        """
        element = self._element(message, "feedback_buttons", None)
        button = element["positive_button" if positive else "negative_button"]
        action = {
            "type": "feedback_buttons",
            "action_id": element.get("action_id", ""),
            "block_id": _block_id_of(message, element),
            "value": button["value"],
            "text": button["text"],
            "action_ts": self.new_ts(),
        }
        return await self.deliver(self.block_actions(message, action, user), kind="interactive")

    async def click_icon(
        self, message: Message, action_id: str, *, user: str = "U0ALICE"
    ) -> Delivery:
        """A person clicks an ``icon_button`` of the message's context_actions block (bolt-js
        ``IconButtonAction``: ``icon``, ``text``, ``value``; docs.slack.dev/tools/bolt-js/
        reference/interfaces/IconButtonAction)."""
        element = self._element(message, "icon_button", action_id)
        action = {
            "type": "icon_button",
            "action_id": action_id,
            "block_id": _block_id_of(message, element),
            "icon": element["icon"],
            "value": element.get("value", ""),
            "text": element["text"],
            "action_ts": self.new_ts(),
        }
        return await self.deliver(self.block_actions(message, action, user), kind="interactive")

    def _element(self, message: Message, kind: str, action_id: str | None) -> dict[str, Any]:
        for element in message.context_actions:
            if element.get("type") == kind and action_id in (None, element.get("action_id")):
                return element
        raise AssertionError(f"no {kind} {action_id or ''} on message {message.ts}: {message}")

    def block_actions(
        self, message: Message, action: dict[str, Any], user: str = "U0ALICE"
    ) -> dict[str, Any]:
        """The ``block_actions`` interaction payload for one click on ``message`` (§1.2)."""
        container: dict[str, Any] = {
            "type": "message",
            "message_ts": message.ts,
            "channel_id": message.channel,
            "is_ephemeral": False,
        }
        if message.thread_ts:
            container["thread_ts"] = message.thread_ts
        return {
            "type": "block_actions",
            "user": {"id": user, "username": user.lower(), "name": user.lower()},
            "api_app_id": self.app_id,
            "token": "fake-verification-token",
            "container": container,
            "trigger_id": f"{next(self._seq)}.{uuid.uuid4().hex[:12]}",
            "team": {"id": self.team_id, "domain": "koala-fake"},
            "enterprise": None,
            "is_enterprise_install": False,
            "channel": {"id": message.channel, "name": "general"},
            "message": message.as_payload(),
            "state": {"values": {}},
            "response_url": f"http://127.0.0.1:{self.port}/actions/{uuid.uuid4().hex}",
            "actions": [action],
        }

    async def start_assistant_thread(self, *, user: str = "U0ALICE") -> Message:
        """A person opens the app's Assistant view: a new DM thread and its started event."""
        channel = f"D0{user[1:]}"
        root = Message(channel, self.new_ts(), self.bot_user_id, "", subtype="assistant_app_thread")
        root.bot_id = self.bot_id
        await self._store(root)
        event = {
            "type": "assistant_thread_started",
            "assistant_thread": {
                "user_id": user,
                "context": {"channel_id": "C0GENERAL", "team_id": self.team_id},
                "channel_id": channel,
                "thread_ts": root.ts,
            },
            "event_ts": self.new_ts(),
        }
        await self.deliver_event(event)
        return root

    async def disconnect_sockets(self) -> None:
        """Ask connected Socket Mode clients to reconnect (``{"type": "disconnect"}``)."""
        for ws in list(self._sockets):
            await ws.send_str(json.dumps({"type": "disconnect", "reason": "refresh_requested"}))

    # --- what tests read -------------------------------------------------------------------

    def thread(self, channel: str, thread_ts: str) -> list[Message]:
        """The root message and its replies, oldest first."""
        return [
            m
            for m in self.messages.get(channel, [])
            if m.ts == thread_ts or m.thread_ts == thread_ts
        ]

    def bot_replies(self, channel: str, thread_ts: str) -> list[Message]:
        """The bot's messages in a thread (not the root)."""
        return [
            m
            for m in self.thread(channel, thread_ts)
            if m.ts != thread_ts and m.user == self.bot_user_id
        ]

    def final_answer(self, channel: str, thread_ts: str) -> Message | None:
        """The newest bot reply in the thread once it carries buttons (the answer is done)."""
        replies = [
            m for m in self.bot_replies(channel, thread_ts) if m.buttons or m.context_actions
        ]
        return replies[-1] if replies else None

    def calls_to(self, method: str) -> list[ApiCall]:
        """The Web API calls of one method, in order."""
        return [c for c in self.calls if c.method == method]

    async def wait_for(self, predicate: Callable[[], T | None], within: float = 10.0) -> T:
        """Wait until ``predicate()`` is truthy (re-checked on every change); return its value."""
        assert self._changed is not None
        async with self._changed:
            value = await asyncio.wait_for(self._changed.wait_for(predicate), within)
        assert value is not None
        return value

    async def settle(self) -> None:
        """Wait for the echo events still being delivered."""
        while self._echo_tasks:
            await asyncio.gather(*list(self._echo_tasks), return_exceptions=True)

    # --- Web API ----------------------------------------------------------------------------

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        args = await _read_args(request)
        token = _bearer(request) or args.pop("token", None)
        status, headers, response = 200, {}, self._authorize(method, token)
        if response is None:
            limit = self._rate_limits.get(method)
            if limit and limit[0] > 0:
                limit[0] -= 1
                status, headers = 429, {"Retry-After": str(limit[1])}
                response = {"ok": False, "error": "ratelimited"}
            else:
                response = await self._call(method, args)
        self.calls.append(ApiCall(method, args, request.content_type, token, status, response))
        await self._notify()
        return web.json_response(response, status=status, headers=headers)

    def _authorize(self, method: str, token: str | None) -> dict[str, Any] | None:
        if not token:
            return {"ok": False, "error": "not_authed"}
        wanted = self.app_token if method in _APP_TOKEN_METHODS else self.bot_token
        if token == wanted:
            return None
        if token in (self.app_token, self.bot_token):
            return {"ok": False, "error": "not_allowed_token_type"}
        return {"ok": False, "error": "invalid_auth"}

    async def _call(self, method: str, args: dict[str, Any]) -> dict[str, Any]:
        handler = self._methods().get(method)
        if handler is None:
            return {"ok": False, "error": "unknown_method"}
        try:
            return {"ok": True, **await handler(args)}
        except SlackApiFault as fault:
            return {"ok": False, "error": fault.error}

    def _methods(self) -> dict[str, Callable[[dict[str, Any]], Any]]:
        return {
            "auth.test": self._auth_test,
            "apps.connections.open": self._connections_open,
            "chat.postMessage": self._post_message,
            "chat.update": self._update,
            "chat.postEphemeral": self._post_ephemeral,
            "reactions.add": self._reactions_add,
            "users.info": self._users_info,
            "assistant.threads.setStatus": self._set_status,
            "assistant.threads.setSuggestedPrompts": self._set_prompts,
            "assistant.threads.setTitle": self._set_title,
            "chat.startStream": self._start_stream,
            "chat.appendStream": self._append_stream,
            "chat.stopStream": self._stop_stream,
            "conversations.replies": self._replies,
            "conversations.history": self._history,
        }

    async def _auth_test(self, args: dict[str, Any]) -> dict[str, Any]:
        return {
            "url": "https://koala-fake.slack.com/",
            "team": "Koala Fake",
            "user": "koala",
            "team_id": self.team_id,
            "user_id": self.bot_user_id,
            "bot_id": self.bot_id,
            "is_enterprise_install": False,
        }

    async def _users_info(self, args: dict[str, Any]) -> dict[str, Any]:
        if "users:read" in self.missing_scopes:
            raise SlackApiFault("missing_scope")
        user = str(args.get("user") or "")
        if not user.startswith(("U", "W")):
            raise SlackApiFault("user_not_found")
        bot = user == self.bot_user_id or user in self.bot_users
        return {
            "user": {
                "id": user,
                "team_id": self.team_id,
                "name": user.lower(),
                "deleted": False,
                "is_bot": bot,
                "is_app_user": False,
            }
        }

    async def _connections_open(self, args: dict[str, Any]) -> dict[str, Any]:
        ticket = uuid.uuid4().hex
        self._tickets.add(ticket)
        return {"url": f"ws://127.0.0.1:{self.port}/link/?ticket={ticket}&app_id={self.app_id}"}

    async def _post_message(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = _required(args, "channel", "channel_not_found")
        text, blocks = _body(args)
        thread_ts = args.get("thread_ts") or None
        msg = Message(channel, self.new_ts(), self.bot_user_id, text, thread_ts, blocks or [])
        msg.bot_id = self.bot_id
        self.timeline.append((time.monotonic(), channel, msg.ts, text))
        await self._store(msg)
        self._echo(self._bot_message_event(msg))
        return {"channel": channel, "ts": msg.ts, "message": msg.as_payload()}

    async def _update(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = _required(args, "channel", "channel_not_found")
        msg = self._find(channel, _required(args, "ts", "message_not_found"))
        if msg.user != self.bot_user_id:
            raise SlackApiFault("cant_update_message")
        text, blocks = _body(args)
        previous = msg.as_payload()
        msg.text = text
        if blocks is not None:  # chat.update keeps the old blocks when none are given
            msg.blocks = blocks
        msg.edits.append(text)
        self.timeline.append((time.monotonic(), channel, msg.ts, text))
        await self._notify()
        self._echo(self._changed_event(msg, previous))
        return {"channel": channel, "ts": msg.ts, "text": text, "message": msg.as_payload()}

    async def _post_ephemeral(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = _required(args, "channel", "channel_not_found")
        user = _required(args, "user", "user_not_in_channel")
        text, _ = _body(args)
        note = Ephemeral(channel, user, text, args.get("thread_ts") or None, self.new_ts())
        self.ephemerals.append(note)
        return {"message_ts": note.ts}

    async def _reactions_add(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = _required(args, "channel", "channel_not_found")
        msg = self._find(channel, _required(args, "timestamp", "bad_timestamp"))
        name = _required(args, "name", "invalid_name")
        voters = msg.reactions.setdefault(name, [])
        if self.bot_user_id in voters:
            raise SlackApiFault("already_reacted")
        voters.append(self.bot_user_id)
        self._echo(self._reaction_event(msg, name, self.bot_user_id, removed=False))
        return {}

    async def _set_status(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = _required(args, "channel_id", "invalid_arguments")
        thread_ts = _required(args, "thread_ts", "invalid_arguments")
        if "status" not in args:
            raise SlackApiFault("invalid_arguments")
        self.statuses.append((channel, thread_ts, str(args["status"])))
        return {}

    async def _set_prompts(self, args: dict[str, Any]) -> dict[str, Any]:
        _required(args, "channel_id", "invalid_arguments")
        prompts = args.get("prompts")
        if isinstance(prompts, str):
            prompts = json.loads(prompts)
        if not prompts or not all({"title", "message"} <= set(p) for p in prompts):
            raise SlackApiFault("invalid_arguments")
        self.suggested_prompts.append({**args, "prompts": prompts})
        return {}

    async def _set_title(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = _required(args, "channel_id", "invalid_arguments")
        thread_ts = _required(args, "thread_ts", "invalid_arguments")
        self.titles.append((channel, thread_ts, _required(args, "title", "invalid_arguments")))
        return {}

    # --- text streaming -------------------------------------------------------------------
    # https://docs.slack.dev/reference/methods/chat.startStream
    # https://docs.slack.dev/reference/methods/chat.appendStream
    # https://docs.slack.dev/reference/methods/chat.stopStream
    # Error codes as listed for each method (slack-ruby/slack-api-ref methods/chat/*.json, a
    # copy of Slack's method specs): missing_recipient_team_id / missing_recipient_user_id,
    # message_not_found, message_not_in_streaming_state, invalid_chunks, invalid_blocks, no_text.

    async def _start_stream(self, args: dict[str, Any]) -> dict[str, Any]:
        if self.refuse_streaming:
            raise SlackApiFault(self.refuse_streaming)
        channel = _required(args, "channel", "channel_not_found")
        # "Streamed messages should always be replies to a user request" (thread_ts required).
        thread_ts = _required(args, "thread_ts", "invalid_arguments")
        if channel_type(channel) != "im":  # "Required when streaming to channels."
            _required(args, "recipient_team_id", "missing_recipient_team_id")
            _required(args, "recipient_user_id", "missing_recipient_user_id")
        text = _stream_text(args)
        msg = Message(channel, self.new_ts(), self.bot_user_id, text, thread_ts)
        msg.bot_id = self.bot_id
        msg.streaming_state = "in_progress"
        self.timeline.append((time.monotonic(), channel, msg.ts, text))
        await self._store(msg)
        self._echo(self._bot_message_event(msg))
        return {"channel": channel, "ts": msg.ts}

    async def _append_stream(self, args: dict[str, Any]) -> dict[str, Any]:
        msg = self._streaming(args)
        text = _stream_text(args)
        if not text and not args.get("chunks"):  # markdown_text is required (or chunks)
            raise SlackApiFault("no_text")
        if text:
            msg.text += text
            msg.edits.append(msg.text)
            self.timeline.append((time.monotonic(), msg.channel, msg.ts, msg.text))
        await self._notify()
        return {"channel": msg.channel, "ts": msg.ts}

    async def _stop_stream(self, args: dict[str, Any]) -> dict[str, Any]:
        msg = self._streaming(args)
        text = _stream_text(args)
        blocks = args.get("blocks")
        if isinstance(blocks, str):
            blocks = json.loads(blocks)
        if blocks:
            _check_blocks(blocks)
            self._check_icons(blocks)
        previous = msg.as_payload()
        if text:
            msg.text += text
            msg.edits.append(msg.text)
            self.timeline.append((time.monotonic(), msg.channel, msg.ts, msg.text))
        # "A list of blocks that will be rendered at the bottom of the finalized message."
        msg.blocks = [{**b, "block_id": b.get("block_id") or _new_block_id()} for b in blocks or []]
        msg.streaming_state = "completed"
        await self._notify()
        self._echo(self._changed_event(msg, previous))
        return {"channel": msg.channel, "ts": msg.ts, "message": msg.as_payload()}

    def _check_icons(self, blocks: list[dict[str, Any]]) -> None:
        icons = {e.get("icon") for b in blocks for e in b.get("elements", []) if "icon" in e}
        if self.icon_names is not None and not icons <= self.icon_names:
            raise SlackApiFault("invalid_blocks")

    def _streaming(self, args: dict[str, Any]) -> Message:
        """The bot's message still streaming at ``channel`` / ``ts``."""
        channel = _required(args, "channel", "channel_not_found")
        msg = self._find(channel, _required(args, "ts", "message_not_found"))
        if msg.user != self.bot_user_id or msg.streaming_state != "in_progress":
            raise SlackApiFault("message_not_in_streaming_state")
        return msg

    async def _replies(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = _required(args, "channel", "channel_not_found")
        thread = self.thread(channel, _required(args, "ts", "thread_not_found"))
        if not thread:
            raise SlackApiFault("thread_not_found")
        return {"messages": [m.as_payload() for m in thread], "has_more": False}

    async def _history(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = _required(args, "channel", "channel_not_found")
        top = [m for m in self.messages.get(channel, []) if m.thread_ts in (None, m.ts)]
        return {"messages": [m.as_payload() for m in reversed(top)], "has_more": False}

    async def _response_url(self, request: web.Request) -> web.Response:
        self.response_url_posts.append(await request.json())
        return web.Response(text="ok")

    # --- channel state ----------------------------------------------------------------------

    def _find(self, channel: str, ts: str) -> Message:
        for msg in self.messages.get(channel, []):
            if msg.ts == ts:
                return msg
        raise SlackApiFault("message_not_found")

    async def _store(self, msg: Message) -> None:
        self.messages.setdefault(msg.channel, []).append(msg)
        await self._notify()

    async def _notify(self) -> None:
        assert self._changed is not None
        async with self._changed:
            self._changed.notify_all()

    # --- echoes of the bot's own activity ---------------------------------------------------

    def _bot_message_event(self, msg: Message) -> dict[str, Any]:
        event = msg.as_payload()
        event.update(
            app_id=self.app_id,
            channel=msg.channel,
            event_ts=msg.ts,
            channel_type=channel_type(msg.channel),
            team=self.team_id,
            bot_profile={"id": self.bot_id, "app_id": self.app_id, "name": "koala"},
        )
        root = [m for m in self.messages.get(msg.channel, []) if m.ts == msg.thread_ts]
        if root:
            event["parent_user_id"] = root[0].user
        return event

    def _changed_event(self, msg: Message, previous: dict[str, Any]) -> dict[str, Any]:
        edited = msg.as_payload()
        edited["edited"] = {"user": self.bot_user_id, "ts": self.new_ts()}
        return {
            "type": "message",
            "subtype": "message_changed",
            "hidden": True,
            "channel": msg.channel,
            "ts": self.new_ts(),
            "event_ts": self.new_ts(),
            "channel_type": channel_type(msg.channel),
            "message": edited,
            "previous_message": previous,
        }

    def _echo(self, event: dict[str, Any]) -> None:
        if not self.echo_bot_events or not (self._sockets or self.events_url):
            return
        task = asyncio.create_task(self._deliver_quietly(event))
        self._echo_tasks.add(task)
        task.add_done_callback(self._echo_tasks.discard)

    async def _deliver_quietly(self, event: dict[str, Any]) -> None:
        # The app may already be gone; Slack would retry later, the fake does not.
        with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
            await self.deliver_event(event)

    # --- Socket Mode --------------------------------------------------------------------------

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        if request.query.get("ticket") not in self._tickets:
            raise web.HTTPUnauthorized(text="invalid ticket")
        self._tickets.discard(request.query["ticket"])
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.socket_connections += 1
        self._sockets.append(ws)
        await ws.send_str(
            json.dumps(
                {
                    "type": "hello",
                    "num_connections": len(self._sockets),
                    "debug_info": {"host": "fake-slack", "approximate_connection_time": 3600},
                    "connection_info": {"app_id": self.app_id},
                }
            )
        )
        try:
            async for frame in ws:
                if frame.type == aiohttp.WSMsgType.TEXT:
                    self._on_ack(json.loads(frame.data))
        finally:
            self._sockets.remove(ws)
        return ws

    def _on_ack(self, ack: dict[str, Any]) -> None:
        self.acks.append(ack)
        waiter = self._pending_acks.pop(str(ack.get("envelope_id")), None)
        if waiter is not None and not waiter.done():
            waiter.set_result(ack)

    async def _send_envelope(
        self, payload: dict[str, Any], kind: str, retry_num: int | None, retry_reason: str
    ) -> Delivery:
        envelope_id = str(uuid.uuid4())
        envelope = {
            "envelope_id": envelope_id,
            "type": kind,
            "accepts_response_payload": kind != "events_api",
            "retry_attempt": retry_num or 0,
            "retry_reason": retry_reason if retry_num else "",
            "payload": payload,
        }
        waiter = asyncio.get_running_loop().create_future()
        self._pending_acks[envelope_id] = waiter
        await self._sockets[-1].send_str(json.dumps(envelope))
        try:
            ack = await asyncio.wait_for(waiter, 3.0)  # Slack's ack deadline
        except TimeoutError:
            self._pending_acks.pop(envelope_id, None)
            return Delivery(0)
        return Delivery(200, json.dumps(ack), ack)


# --- wire helpers ---------------------------------------------------------------------------


def sign(secret: str, timestamp: str, raw: bytes) -> str:
    """Slack's request signature: ``v0=`` + HMAC-SHA256 of ``v0:{timestamp}:{body}``."""
    base = f"v0:{timestamp}:".encode() + raw
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def _encode(body: dict[str, Any], kind: str) -> tuple[bytes, str]:
    if kind == "interactive":
        form = urlencode({"payload": json.dumps(body)})
        return form.encode(), "application/x-www-form-urlencoded"
    return json.dumps(body).encode(), "application/json"


def _bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    if not header.startswith("Bearer "):
        return None
    return header.removeprefix("Bearer ").strip() or None


async def _read_args(request: web.Request) -> dict[str, Any]:
    args: dict[str, Any] = dict(request.query)
    if request.content_type == "application/json":
        args.update(await request.json())
    elif request.can_read_body:
        args.update(dict(await request.post()))
    return args


def _required(args: dict[str, Any], name: str, error: str) -> str:
    value = args.get(name)
    if not value:
        raise SlackApiFault(error)
    return str(value)


def _body(args: dict[str, Any]) -> tuple[str, list[dict[str, Any]] | None]:
    text = str(args.get("text") or "")
    blocks = args.get("blocks")
    if isinstance(blocks, str):
        blocks = json.loads(blocks)
    if not text and not blocks:
        raise SlackApiFault("no_text")
    if len(text) > TEXT_LIMIT:
        raise SlackApiFault("msg_too_long")
    if blocks is not None:
        _check_blocks(blocks)
    return text, blocks


def _check_blocks(blocks: list[dict[str, Any]]) -> None:
    """Slack's limits that a bot streaming long answers can hit: answered ``invalid_blocks``."""
    if len(blocks) > BLOCKS_LIMIT:
        raise SlackApiFault("invalid_blocks")
    block_ids = [b["block_id"] for b in blocks if b.get("block_id")]
    if len(block_ids) != len(set(block_ids)):
        raise SlackApiFault("invalid_blocks")
    for block in blocks:
        kind = block.get("type")
        _check_length(block.get("block_id"), BLOCK_ID_LIMIT)
        if kind == "section" and len(_block_text(block)) > SECTION_LIMIT:
            raise SlackApiFault("invalid_blocks")
        if kind == "markdown" and len(_block_text(block)) > MARKDOWN_LIMIT:
            raise SlackApiFault("invalid_blocks")
        if kind in ("section", "markdown") and not _block_text(block):
            raise SlackApiFault("invalid_blocks")
        if kind == "actions":
            for element in block.get("elements", []):
                _check_button(element)
        if kind == "context_actions":
            _check_context_actions(block)


def _check_button(element: dict[str, Any]) -> None:
    if element.get("type") in ("feedback_buttons", "icon_button"):
        # "must be used inside the context actions block" (feedback buttons / icon button refs)
        raise SlackApiFault("invalid_blocks")
    if element.get("type") != "button":
        return
    text = element.get("text") or {}
    if (
        len(str(text.get("text", ""))) > BUTTON_TEXT_LIMIT
        or len(str(element.get("value", ""))) > BUTTON_VALUE_LIMIT
        or len(str(element.get("action_id", ""))) > ACTION_ID_LIMIT
    ):
        raise SlackApiFault("invalid_blocks")


def _check_context_actions(block: dict[str, Any]) -> None:
    """https://docs.slack.dev/reference/block-kit/blocks/context-actions-block: ``elements``
    required, 1 to 5 of ``feedback_buttons`` / ``icon_button``; action_ids unique in the block."""
    elements = block.get("elements")
    if not isinstance(elements, list) or not 0 < len(elements) <= CONTEXT_ACTIONS_LIMIT:
        raise SlackApiFault("invalid_blocks")
    if not all(isinstance(e, dict) for e in elements):
        raise SlackApiFault("invalid_blocks")
    action_ids = [e["action_id"] for e in elements if e.get("action_id")]
    if len(action_ids) != len(set(action_ids)):
        raise SlackApiFault("invalid_blocks")
    for element in elements:
        kind = element.get("type")
        if kind == "feedback_buttons":
            _check_feedback_buttons(element)
        elif kind == "icon_button":
            _check_icon_button(element)
        else:
            raise SlackApiFault("invalid_blocks")


def _check_feedback_buttons(element: dict[str, Any]) -> None:
    """https://docs.slack.dev/reference/block-kit/block-elements/feedback-buttons-element:
    ``positive_button`` and ``negative_button`` required, each with ``text`` (plain_text only,
    at most 75), ``value`` (required, at most 2000), optional ``accessibility_label`` (75);
    optional ``action_id`` (255)."""
    _check_length(element.get("action_id"), ACTION_ID_LIMIT)
    for side in ("positive_button", "negative_button"):
        button = element.get(side)
        if not isinstance(button, dict):
            raise SlackApiFault("invalid_blocks")
        _check_plain_text(button.get("text"), BUTTON_TEXT_LIMIT)
        value = button.get("value")
        if not isinstance(value, str) or not value:
            raise SlackApiFault("invalid_blocks")
        _check_length(value, BUTTON_VALUE_LIMIT)
        _check_length(button.get("accessibility_label"), ACCESSIBILITY_LABEL_LIMIT)


def _check_icon_button(element: dict[str, Any]) -> None:
    """https://docs.slack.dev/reference/block-kit/block-elements/icon-button-element: ``icon``
    and ``text`` (plain_text only) required; optional ``action_id`` (255), ``value`` (2000),
    ``accessibility_label`` (75), ``visible_to_user_ids`` (an array of user ids), ``confirm``.

    The icon's name is not checked: one copy of that page says "The trash icon is the only icon
    available at this time", a newer one only "The icon to show (e.g., "trash")".
    """
    icon = element.get("icon")
    if not isinstance(icon, str) or not icon:
        raise SlackApiFault("invalid_blocks")
    _check_plain_text(element.get("text"), None)
    _check_length(element.get("action_id"), ACTION_ID_LIMIT)
    _check_length(element.get("value"), BUTTON_VALUE_LIMIT)
    _check_length(element.get("accessibility_label"), ACCESSIBILITY_LABEL_LIMIT)
    users = element.get("visible_to_user_ids")
    if users is not None and not (
        isinstance(users, list) and all(isinstance(u, str) and u for u in users)
    ):
        raise SlackApiFault("invalid_blocks")


def _check_plain_text(text: Any, limit: int | None) -> None:
    if not (isinstance(text, dict) and text.get("type") == "plain_text" and text.get("text")):
        raise SlackApiFault("invalid_blocks")
    if limit is not None:
        _check_length(text["text"], limit)


def _check_length(value: Any, limit: int) -> None:
    if value is not None and (not isinstance(value, str) or len(value) > limit):
        raise SlackApiFault("invalid_blocks")


def _stream_text(args: dict[str, Any]) -> str:
    """The text a streaming call adds: ``markdown_text`` and the ``markdown_text`` chunks.

    Each is "Limit[ed] ... to 12,000 characters"; Slack checks JSON arguments against its schema
    and answers ``invalid_arguments`` for a value out of bounds. A chunk of an unknown type, or
    without its text, is ``invalid_chunks`` (chat.appendStream's error list).
    """
    text = args.get("markdown_text")
    if text is not None and (not isinstance(text, str) or len(text) > STREAM_TEXT_LIMIT):
        raise SlackApiFault("invalid_arguments")
    chunks = args.get("chunks") or []
    if isinstance(chunks, str):
        chunks = json.loads(chunks)
    pieces = [text or ""]
    for chunk in chunks:
        kind = chunk.get("type") if isinstance(chunk, dict) else None
        if kind not in CHUNK_TYPES:
            raise SlackApiFault("invalid_chunks")
        if kind == "markdown_text":
            piece = chunk.get("text")
            if not isinstance(piece, str) or len(piece) > STREAM_TEXT_LIMIT:
                raise SlackApiFault("invalid_chunks")
            pieces.append(piece)
    return "".join(pieces)


def _block_id_of(message: Message, element: dict[str, Any]) -> str:
    return next(
        str(b.get("block_id", "")) for b in message.blocks if element in b.get("elements", [])
    )


def _new_block_id() -> str:
    """A block_id as Slack makes one up for a block sent without it."""
    return uuid.uuid4().hex[:5]
