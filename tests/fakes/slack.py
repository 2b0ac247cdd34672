"""A fake Slack on real loopback sockets, for driving the real slack-bolt app end to end.

It speaks the wire protocol of /work/shared/reference/slack-and-discord.md §1:

* the Web API under ``/api/<method>`` (JSON, form and query-string bodies, as slack_sdk sends
  them; ``Authorization: Bearer`` checked; 429 with an integer ``Retry-After`` on demand);
* a Socket Mode WebSocket (``apps.connections.open`` → ``hello`` → envelopes → acks, recorded);
* a signer that POSTs signed Events API bodies and form-encoded ``block_actions`` to an app's
  HTTP endpoint, with ``X-Slack-Retry-Num`` on demand.

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
        block_id = next(
            b.get("block_id", "") for b in message.blocks if button in b.get("elements", [])
        )
        container: dict[str, Any] = {
            "type": "message",
            "message_ts": message.ts,
            "channel_id": message.channel,
            "is_ephemeral": False,
        }
        if message.thread_ts:
            container["thread_ts"] = message.thread_ts
        payload: dict[str, Any] = {
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
            "actions": [
                {
                    "action_id": action_id,
                    "block_id": block_id,
                    "text": button.get("text", {}),
                    "value": button.get("value", ""),
                    "type": "button",
                    "action_ts": self.new_ts(),
                }
            ],
        }
        return await self.deliver(payload, kind="interactive")

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
        replies = [m for m in self.bot_replies(channel, thread_ts) if m.buttons]
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
    for block in blocks:
        kind = block.get("type")
        if kind == "section" and len(_block_text(block)) > SECTION_LIMIT:
            raise SlackApiFault("invalid_blocks")
        if kind == "markdown" and len(_block_text(block)) > MARKDOWN_LIMIT:
            raise SlackApiFault("invalid_blocks")
        if kind in ("section", "markdown") and not _block_text(block):
            raise SlackApiFault("invalid_blocks")
        if kind == "actions":
            for element in block.get("elements", []):
                _check_button(element)


def _check_button(element: dict[str, Any]) -> None:
    if element.get("type") != "button":
        return
    text = element.get("text") or {}
    if (
        len(str(text.get("text", ""))) > BUTTON_TEXT_LIMIT
        or len(str(element.get("value", ""))) > BUTTON_VALUE_LIMIT
        or len(str(element.get("action_id", ""))) > ACTION_ID_LIMIT
    ):
        raise SlackApiFault("invalid_blocks")
