"""A fake Discord on real loopback sockets: REST API and gateway, as discord.py 2.7 reads them.

Follows reference/slack-and-discord.md §2: JSON bodies with `Content-Type` exactly
`application/json`, 429s with a `Via` header and a JSON `retry_after`, HELLO → IDENTIFY → READY →
GUILD_CREATE, heartbeats and their ACKs, op 7 RECONNECT followed by RESUME with replay of what the
client missed, and the interaction callback/webhook routes. It keeps what a user would see
(channels, threads, messages and every edit) so tests can read it back.

Drive it from a test::

    fake = FakeDiscord()
    await fake.start()                      # fake.api_url, fake.gateway_url
    alice = fake.add_user("alice")
    msg = await fake.say(alice, fake.channel_id, "hi", mention_bot=True)
    thread = await fake.wait_for(lambda: fake.thread_for(msg.id))
    await fake.stop()
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import unquote

from aiohttp import WSMsgType, web

T = TypeVar("T")
JSON = dict[str, Any]

DISCORD_EPOCH_MS = 1_420_070_400_000
MAX_CONTENT = 2000
INTERACTION_ACK_DEADLINE = 3.0  # seconds Discord waits for the first interaction response

# Gateway opcodes (gateway.py:315-327)
DISPATCH, HEARTBEAT, IDENTIFY, RESUME, RECONNECT, INVALID_SESSION, HELLO, HEARTBEAT_ACK = (
    0,
    1,
    2,
    6,
    7,
    9,
    10,
    11,
)
# Channel types
GUILD_TEXT, DM, PUBLIC_THREAD = 0, 1, 11
EPHEMERAL = 1 << 6
MESSAGE_CONTENT = 1 << 15  # the privileged intent


def _now_iso() -> str:
    return datetime.now(UTC).isoformat()


def _json_response(
    data: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """A JSON response whose Content-Type is exactly `application/json`, as Discord sends it."""
    return web.Response(
        body=json.dumps(data).encode(),
        status=status,
        headers={"Content-Type": "application/json", **(headers or {})},
    )


def _error(status: int, code: int, message: str) -> web.Response:
    return _json_response({"message": message, "code": code}, status)


@dataclass
class FakeUser:
    """A Discord user (a person, another bot, or the bot under test)."""

    id: int
    username: str
    bot: bool = False

    def payload(self) -> JSON:
        data: JSON = {
            "id": str(self.id),
            "username": self.username,
            "discriminator": "0",
            "global_name": self.username,
            "avatar": None,
        }
        if self.bot:
            data["bot"] = True
        return data


@dataclass
class FakeMessage:
    """A message as the channel shows it; ``edits`` lists every content it had, oldest first."""

    id: int
    channel_id: int
    author: FakeUser
    content: str
    guild_id: int | None = None
    mentions: list[FakeUser] = field(default_factory=list)
    components: list[JSON] = field(default_factory=list)
    flags: int = 0
    edits: list[str] = field(default_factory=list)
    nonce: str | None = None
    reference_id: int | None = None
    edited_at: str | None = None
    created_at: str = field(default_factory=_now_iso)

    def __post_init__(self) -> None:
        self.edits.append(self.content)

    @property
    def custom_ids(self) -> list[str]:
        """The custom_id of every button under the message."""
        return [
            child["custom_id"]
            for row in self.components
            for child in row.get("components", [])
            if "custom_id" in child
        ]

    def payload(self) -> JSON:
        data: JSON = {
            "id": str(self.id),
            "channel_id": str(self.channel_id),
            "author": self.author.payload(),
            "content": self.content,
            "timestamp": self.created_at,
            "edited_timestamp": self.edited_at,
            "tts": False,
            "mention_everyone": False,
            "mentions": [u.payload() for u in self.mentions],
            "mention_roles": [],
            "attachments": [],
            "embeds": [],
            "pinned": False,
            "type": 0 if self.reference_id is None else 19,
            "flags": self.flags,
            "components": self.components,
        }
        if self.guild_id is not None:
            data["guild_id"] = str(self.guild_id)
        if self.nonce is not None:
            data["nonce"] = self.nonce
        if self.reference_id is not None:
            data["message_reference"] = {
                "type": 0,
                "message_id": str(self.reference_id),
                "channel_id": str(self.channel_id),
            }
        return data


@dataclass
class FakeChannel:
    """A text channel, a thread, or a DM channel, with its messages in order."""

    id: int
    type: int
    name: str = ""
    guild_id: int | None = None
    parent_id: int | None = None
    owner_id: int | None = None
    recipient: FakeUser | None = None
    messages: list[FakeMessage] = field(default_factory=list)
    created_at: str = field(default_factory=_now_iso)

    def payload(self) -> JSON:
        data: JSON = {"id": str(self.id), "type": self.type}
        if self.type == DM:
            assert self.recipient is not None
            data.update(recipients=[self.recipient.payload()], last_message_id=None, flags=0)
            return data
        data.update(
            name=self.name, guild_id=str(self.guild_id), position=0, permission_overwrites=[]
        )
        if self.type == PUBLIC_THREAD:
            data.update(
                parent_id=str(self.parent_id),
                owner_id=str(self.owner_id),
                message_count=len(self.messages),
                member_count=1,
                rate_limit_per_user=0,
                flags=0,
                thread_metadata={
                    "archived": False,
                    "auto_archive_duration": 1440,
                    "archive_timestamp": self.created_at,
                    "locked": False,
                    "create_timestamp": self.created_at,
                },
            )
        else:
            data.update(topic=None, nsfw=False, rate_limit_per_user=0, last_message_id=None)
        return data


@dataclass
class FakeInteraction:
    """An interaction the fake sent, and what the bot answered to it."""

    id: int
    token: str
    channel_id: int
    created: float
    callbacks: list[JSON] = field(default_factory=list)
    replies: list[FakeMessage] = field(default_factory=list)
    late: bool = False  # a callback arrived after Discord's 3 s deadline

    @property
    def acknowledged(self) -> bool:
        return bool(self.callbacks)


@dataclass
class _RateLimit:
    method: str
    path_suffix: str
    retry_after: float
    times: int


@dataclass
class Session:
    """One gateway session (survives reconnects until invalidated)."""

    id: str
    shard: tuple[int, int] | None
    intents: int
    log: list[JSON] = field(default_factory=list)  # every dispatch sent, for RESUME replay
    ws: web.WebSocketResponse | None = None
    redeliver: int = 0  # how many already-delivered events the next RESUME sends again
    floor: int = 0  # READY and the GUILD_CREATEs: never sent again on RESUME

    @property
    def seq(self) -> int:
        return len(self.log)

    def wants(self, guild_id: int | None) -> bool:
        """Discord's shard routing: guild events by (guild_id >> 22) % count, DMs on shard 0."""
        if self.shard is None:
            return True
        shard_id, count = self.shard
        return (0 if guild_id is None else (guild_id >> 22) % count) == shard_id


class FakeDiscord:
    """Discord's REST API under /api/v10 and its gateway under /gateway, on 127.0.0.1."""

    def __init__(self, *, token: str = "fake-discord-token", heartbeat_interval: float = 41.25):
        self.token = token
        self.heartbeat_interval = heartbeat_interval
        self._ids = itertools.count(1)
        self.bot = FakeUser(self.snowflake(), "koala", bot=True)
        self.application_id = self.bot.id
        self.guild_id = self.snowflake()
        self.channel_id = self.snowflake()
        self.users: dict[int, FakeUser] = {self.bot.id: self.bot}
        self.channels: dict[int, FakeChannel] = {
            self.channel_id: FakeChannel(self.channel_id, GUILD_TEXT, "general", self.guild_id)
        }
        self.messages: dict[int, FakeMessage] = {}
        self.interactions: dict[int, FakeInteraction] = {}
        self.commands: list[JSON] = []
        self.sessions: dict[str, Session] = {}
        #: Every IDENTIFY and RESUME payload received, in order.
        self.identifies: list[JSON] = []
        self.resumes: list[JSON] = []
        #: The sequence number each heartbeat carried (`d`), in order.
        self.heartbeats: list[int | None] = []
        self.connections = 0
        #: (method, path) of every REST request, and the ones the fake does not implement.
        self.requests: list[tuple[str, str]] = []
        self.unhandled: list[tuple[str, str]] = []
        self.rate_limited: list[tuple[str, str]] = []
        #: What people could see when: (time.monotonic(), message id, content) per post and edit.
        self.timeline: list[tuple[float, int, str]] = []
        self._rate_limits: list[_RateLimit] = []
        #: False: the bot lacks "Create Public Threads" (thread creation answers 403).
        self.can_create_threads = True
        #: False: the Message Content intent is off in the portal (IDENTIFY with it closes 4014).
        self.message_content_enabled = True
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self._route_table = self._routes()
        self.port = 0

    # --- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Listen on an ephemeral loopback port."""
        app = web.Application(middlewares=[self._middleware])
        app.router.add_get("/gateway", self._gateway)
        app.router.add_get("/gateway-resume", self._gateway)
        app.router.add_route("*", "/api/v10/{path:.*}", self._rest)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        """Close every gateway socket and the listener."""
        for session in self.sessions.values():
            if session.ws is not None:
                await session.ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v10"

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/gateway"

    def snowflake(self) -> int:
        """A fresh id, time-ordered like Discord's."""
        return ((int(time.time() * 1000) - DISCORD_EPOCH_MS) << 22) | next(self._ids)

    # --- what a test does ----------------------------------------------------------------

    def add_user(self, name: str, *, bot: bool = False) -> FakeUser:
        user = FakeUser(self.snowflake(), name, bot=bot)
        self.users[user.id] = user
        return user

    async def say(
        self,
        user: FakeUser,
        channel_id: int,
        text: str,
        *,
        mention_bot: bool = False,
        mentioning: Sequence[FakeUser] = (),
    ) -> FakeMessage:
        """A guild message from ``user``; `mention_bot` puts `<@bot>` in front, as the client
        does, and `mentioning` lists the other users whose `<@id>` the text contains."""
        channel = self.channels[channel_id]
        content = f"<@{self.bot.id}> {text}" if mention_bot else text
        mentions = [self.bot, *mentioning] if mention_bot else list(mentioning)
        message = self._store(channel, user, content, mentions=mentions)
        data = message.payload()
        data["member"] = self._member(user, with_user=False)
        await self.dispatch("MESSAGE_CREATE", data, channel.guild_id)
        return message

    async def dm(self, user: FakeUser, text: str) -> FakeMessage:
        """A direct message from ``user`` to the bot."""
        channel = self.dm_channel(user)
        message = self._store(channel, user, text)
        await self.dispatch("MESSAGE_CREATE", message.payload(), None)
        return message

    def dm_channel(self, user: FakeUser) -> FakeChannel:
        for channel in self.channels.values():
            if channel.type == DM and channel.recipient == user:
                return channel
        channel = FakeChannel(self.snowflake(), DM, recipient=user)
        self.channels[channel.id] = channel
        return channel

    async def react(
        self, user: FakeUser, message_id: int, emoji: str = "👍", *, remove: bool = False
    ) -> None:
        """Add (or remove) a unicode reaction, as MESSAGE_REACTION_ADD/REMOVE."""
        message = self.messages[message_id]
        data: JSON = {
            "user_id": str(user.id),
            "channel_id": str(message.channel_id),
            "message_id": str(message.id),
            "emoji": {"id": None, "name": emoji},
            "burst": False,
            "type": 0,
        }
        if message.guild_id is not None:
            data["guild_id"] = str(message.guild_id)
            if not remove:
                data["member"] = self._member(user)
        if not remove:
            data["message_author_id"] = str(message.author.id)
        event = "MESSAGE_REACTION_REMOVE" if remove else "MESSAGE_REACTION_ADD"
        await self.dispatch(event, data, message.guild_id)

    async def click(self, user: FakeUser, message_id: int, custom_id: str) -> FakeInteraction:
        """Press the button ``custom_id`` under a message (INTERACTION_CREATE, type 3)."""
        message = self.messages[message_id]
        if custom_id not in message.custom_ids:
            raise ValueError(f"message {message_id} has no button {custom_id!r}")
        data = {"custom_id": custom_id, "component_type": 2}
        return await self._interact(user, self.channels[message.channel_id], 3, data, message)

    async def slash(self, user: FakeUser, channel_id: int, name: str) -> FakeInteraction:
        """Run the slash command ``/name`` (INTERACTION_CREATE, type 2) in a channel."""
        command = next((c for c in self.commands if c["name"] == name), None)
        if command is None:
            raise ValueError(f"the bot registered no /{name} command")
        data = {"id": command["id"], "name": name, "type": 1}
        return await self._interact(user, self.channels[channel_id], 2, data, None)

    async def reconnect(self, *, redeliver: int = 0) -> None:
        """Send op 7 RECONNECT; the client resumes and gets what it missed.

        ``redeliver`` makes the RESUME replay that many already-delivered events again, as a
        resume from a stale sequence number does.
        """
        for session in self.sessions.values():
            ws, session.ws = session.ws, None
            session.redeliver = redeliver
            if ws is not None and not ws.closed:
                await ws.send_json({"op": RECONNECT, "d": None})

    def rate_limit(
        self, method: str, path_suffix: str = "", *, retry_after: float = 0.3, times: int = 1
    ) -> None:
        """Answer the next ``times`` matching REST requests with a 429."""
        self._rate_limits.append(_RateLimit(method.upper(), path_suffix, retry_after, times))

    # --- what a user sees ----------------------------------------------------------------

    def thread_for(self, message_id: int) -> FakeChannel | None:
        """The thread started from a message (Discord gives it the message's id)."""
        channel = self.channels.get(message_id)
        return channel if channel is not None and channel.type == PUBLIC_THREAD else None

    def bot_messages(self, channel_id: int) -> list[FakeMessage]:
        return [m for m in self.channels[channel_id].messages if m.author == self.bot]

    def shown(self, channel_id: int) -> list[str]:
        """The text of every bot message in a channel, as a user sees it now."""
        return [m.content for m in self.bot_messages(channel_id)]

    async def wait_for(self, predicate: Callable[[], T | None], within: float = 15.0) -> T:
        """Wait until ``predicate()`` returns something truthy (re-checked on every change)."""
        async with asyncio.timeout(within), self._changed:
            while not (result := predicate()):
                await self._changed.wait()
            return result

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # --- gateway -------------------------------------------------------------------------

    async def dispatch(self, event: str, data: JSON, guild_id: int | None) -> None:
        """Send a DISPATCH to every session whose shard gets this guild (or DM)."""
        for session in self.sessions.values():
            if not session.wants(guild_id):
                continue
            frame = {"op": DISPATCH, "t": event, "s": session.seq + 1, "d": data}
            session.log.append(frame)
            if session.ws is not None and not session.ws.closed:
                await session.ws.send_json(frame)
        await self._notify()

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.connections += 1
        interval_ms = int(self.heartbeat_interval * 1000)
        await ws.send_json({"op": HELLO, "d": {"heartbeat_interval": interval_ms}})
        async for frame in ws:
            if frame.type != WSMsgType.TEXT:
                continue
            payload = json.loads(frame.data)
            op, data = payload.get("op"), payload.get("d")
            if op == HEARTBEAT:
                self.heartbeats.append(data)
                await ws.send_json({"op": HEARTBEAT_ACK})
                await self._notify()
            elif op == IDENTIFY:
                await self._identify(ws, data)
            elif op == RESUME:
                await self._resume(ws, data)
        return ws

    async def _identify(self, ws: web.WebSocketResponse, data: JSON) -> None:
        self.identifies.append(data)
        if data.get("token") != self.token:
            await ws.close(code=4004, message=b"Authentication failed.")
            return
        if int(data["intents"]) & MESSAGE_CONTENT and not self.message_content_enabled:
            await ws.close(code=4014, message=b"Disallowed intent(s).")
            return
        shard = tuple(data["shard"]) if data.get("shard") else None
        session = Session(secrets.token_hex(16), shard, int(data["intents"]), ws=ws)
        self.sessions[session.id] = session
        ready: JSON = {
            "v": 10,
            "user": self.bot.payload(),
            "guilds": [{"id": str(self.guild_id), "unavailable": True}]
            if session.wants(self.guild_id)
            else [],
            "session_id": session.id,
            "resume_gateway_url": f"ws://127.0.0.1:{self.port}/gateway-resume",
            "application": {"id": str(self.application_id), "flags": 0},
            "private_channels": [],
        }
        if shard is not None:
            ready["shard"] = list(shard)
        await self._send_to(session, "READY", ready)
        if session.wants(self.guild_id):
            await self._send_to(session, "GUILD_CREATE", self._guild_payload())
        session.floor = session.seq
        await self._notify()

    async def _resume(self, ws: web.WebSocketResponse, data: JSON) -> None:
        self.resumes.append(data)
        session = self.sessions.get(data.get("session_id", ""))
        if session is None or data.get("token") != self.token:
            await ws.send_json({"op": INVALID_SESSION, "d": False})
            await self._notify()
            return
        session.ws = ws
        start = max(session.floor, int(data.get("seq") or 0) - session.redeliver)
        session.redeliver = 0
        for frame in session.log[start:]:
            await ws.send_json(frame)
        await self._send_to(session, "RESUMED", {})
        await self._notify()

    async def _send_to(self, session: Session, event: str, data: JSON) -> None:
        frame = {"op": DISPATCH, "t": event, "s": session.seq + 1, "d": data}
        session.log.append(frame)
        assert session.ws is not None
        await session.ws.send_json(frame)

    def _guild_payload(self) -> JSON:
        everyone = {
            "id": str(self.guild_id),
            "name": "@everyone",
            "permissions": str((1 << 41) - 1),
            "position": 0,
            "color": 0,
            "hoist": False,
            "managed": False,
            "mentionable": False,
            "flags": 0,
        }
        guild_channels = [c for c in self.channels.values() if c.guild_id == self.guild_id]
        return {
            "id": str(self.guild_id),
            "name": "Koala Lab",
            "owner_id": str(self.snowflake()),
            "unavailable": False,
            "member_count": 2,
            "large": False,
            "features": [],
            "emojis": [],
            "stickers": [],
            "roles": [everyone],
            "members": [self._member(self.bot)],
            "voice_states": [],
            "presences": [],
            "channels": [c.payload() for c in guild_channels if c.type != PUBLIC_THREAD],
            "threads": [c.payload() for c in guild_channels if c.type == PUBLIC_THREAD],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
            "joined_at": _now_iso(),
        }

    def _member(self, user: FakeUser, *, with_user: bool = True) -> JSON:
        member: JSON = {
            "roles": [],
            "joined_at": _now_iso(),
            "deaf": False,
            "mute": False,
            "flags": 0,
        }
        if with_user:
            member["user"] = user.payload()
        return member

    # --- REST ----------------------------------------------------------------------------

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Any]
    ) -> web.StreamResponse:
        if not request.path.startswith("/api/"):
            response: web.StreamResponse = await handler(request)
            return response
        path = "/" + request.match_info.get("path", "")
        self.requests.append((request.method, path))
        limited = self._take_rate_limit(request.method, path)
        if limited is not None:
            self.rate_limited.append((request.method, path))
            return _json_response(
                {"message": "You are being rate limited.", "retry_after": limited, "global": False},
                429,
                {
                    "Via": "1.1 google",
                    "Retry-After": str(max(1, round(limited))),
                    "X-RateLimit-Scope": "user",
                    "X-RateLimit-Limit": "5",
                    "X-RateLimit-Remaining": "0",
                    "X-RateLimit-Reset-After": str(limited),
                    "X-RateLimit-Bucket": "fake-bucket",
                },
            )
        needs_auth = not path.startswith(("/interactions/", "/webhooks/"))
        if needs_auth and request.headers.get("Authorization") != f"Bot {self.token}":
            return _error(401, 0, "401: Unauthorized")
        response = await handler(request)
        await self._notify()
        return response

    def _take_rate_limit(self, method: str, path: str) -> float | None:
        for limit in self._rate_limits:
            if limit.method == method and path.endswith(limit.path_suffix) and limit.times > 0:
                limit.times -= 1
                return limit.retry_after
        return None

    async def _rest(self, request: web.Request) -> web.StreamResponse:
        path = "/" + request.match_info["path"]
        body: Any = await request.json() if request.can_read_body else None
        for method, pattern, handler in self._route_table:
            match = pattern.fullmatch(path)
            if match is not None and method == request.method:
                args = {k: unquote(v) for k, v in match.groupdict().items()}
                response: web.StreamResponse = await handler(
                    body=body, query=dict(request.query), **args
                )
                return response
        self.unhandled.append((request.method, path))
        return _error(404, 0, "404: Not Found")

    def _routes(self) -> list[tuple[str, re.Pattern[str], Callable[..., Any]]]:
        table: list[tuple[str, str, Callable[..., Any]]] = [
            ("GET", r"/users/@me", self._get_me),
            ("GET", r"/oauth2/applications/@me", self._get_app),
            ("GET", r"/gateway(/bot)?", self._get_gateway),
            ("POST", r"/channels/(?P<channel_id>\d+)/messages", self._post),
            ("PATCH", r"/channels/(?P<channel_id>\d+)/messages/(?P<message_id>\d+)", self._edit),
            ("POST", r"/channels/(?P<channel_id>\d+)/typing", self._typing),
            (
                "POST",
                r"/channels/(?P<channel_id>\d+)/messages/(?P<message_id>\d+)/threads",
                self._thread,
            ),
            ("PUT", r"/applications/(?P<application_id>\d+)/commands", self._sync),
            ("GET", r"/applications/(?P<application_id>\d+)/commands", self._cmds),
            (
                "POST",
                r"/interactions/(?P<interaction_id>\d+)/(?P<token>[^/]+)/callback",
                self._callback,
            ),
            ("POST", r"/webhooks/(?P<application_id>\d+)/(?P<token>[^/]+)", self._followup),
        ]
        return [(method, re.compile(pattern), handler) for method, pattern, handler in table]

    async def _get_me(self, **_: Any) -> web.Response:
        return _json_response({**self.bot.payload(), "verified": True, "mfa_enabled": False})

    async def _get_app(self, **_: Any) -> web.Response:
        owner = {
            "id": str(self.snowflake()),
            "username": "owner",
            "discriminator": "0",
            "avatar": None,
        }
        return _json_response(
            {
                "id": str(self.application_id),
                "name": "koala",
                "description": "",
                "icon": None,
                "bot_public": True,
                "bot_require_code_grant": False,
                "owner": owner,
                "verify_key": "0" * 64,
                "flags": 0,
            }
        )

    async def _get_gateway(self, **_: Any) -> web.Response:
        return _json_response(
            {
                "url": f"ws://127.0.0.1:{self.port}/gateway",
                "shards": 1,
                "session_start_limit": {
                    "total": 1000,
                    "remaining": 999,
                    "reset_after": 0,
                    "max_concurrency": 1,
                },
            }
        )

    def _check_content(
        self, content: str | None, components: list[JSON] | None
    ) -> web.Response | None:
        if content is not None and len(content) > MAX_CONTENT:
            return _json_response(
                {
                    "message": "Invalid Form Body",
                    "code": 50035,
                    "errors": {
                        "content": {
                            "_errors": [
                                {
                                    "code": "BASE_TYPE_MAX_LENGTH",
                                    "message": "Must be 2000 or fewer in length.",
                                }
                            ]
                        }
                    },
                },
                400,
            )
        if not (content or "").strip() and not components:
            return _error(400, 50006, "Cannot send an empty message")
        return None

    async def _post(self, channel_id: str, *, body: JSON, **_: Any) -> web.Response:
        channel = self.channels.get(int(channel_id))
        if channel is None:
            return _error(404, 10003, "Unknown Channel")
        nonce = body.get("nonce")
        if body.get("enforce_nonce") and nonce is not None:
            for existing in channel.messages:
                if existing.nonce == nonce:
                    return _json_response(existing.payload())
        if (bad := self._check_content(body.get("content"), body.get("components"))) is not None:
            return bad
        reference = body.get("message_reference") or {}
        message = self._store(
            channel,
            self.bot,
            body.get("content") or "",
            components=body.get("components") or [],
            nonce=nonce,
            reference_id=int(reference["message_id"]) if reference.get("message_id") else None,
        )
        self.timeline.append((time.monotonic(), message.id, message.content))
        data = message.payload()
        await self.dispatch("MESSAGE_CREATE", data, channel.guild_id)
        return _json_response(data)

    async def _edit(
        self, channel_id: str, message_id: str, *, body: JSON, **_: Any
    ) -> web.Response:
        message = self.messages.get(int(message_id))
        if message is None or message.channel_id != int(channel_id):
            return _error(404, 10008, "Unknown Message")
        if message.author != self.bot:
            return _error(403, 50005, "Cannot edit a message authored by another user")
        content = body.get("content", message.content)
        components = body.get("components", message.components)
        if (bad := self._check_content(content, components)) is not None:
            return bad
        message.content = content or ""
        message.components = components or []
        message.edits.append(message.content)
        message.edited_at = _now_iso()
        self.timeline.append((time.monotonic(), message.id, message.content))
        data = message.payload()
        await self.dispatch("MESSAGE_UPDATE", data, message.guild_id)
        return _json_response(data)

    async def _typing(self, channel_id: str, **_: Any) -> web.Response:
        if int(channel_id) not in self.channels:
            return _error(404, 10003, "Unknown Channel")
        return web.Response(status=204)

    async def _thread(
        self, channel_id: str, message_id: str, *, body: JSON, **_: Any
    ) -> web.Response:
        parent = self.channels.get(int(channel_id))
        message = self.messages.get(int(message_id))
        if parent is None or message is None or message.channel_id != parent.id:
            return _error(404, 10008, "Unknown Message")
        if not self.can_create_threads:
            return _error(403, 50013, "Missing Permissions")
        if parent.type != GUILD_TEXT:
            return _error(400, 50024, "Cannot execute action on this channel type")
        if message.id in self.channels:
            return _error(400, 160004, "A thread has already been created for this message")
        name = str(body.get("name") or "")
        if not 1 <= len(name) <= 100:
            return _error(400, 50035, "Invalid Form Body")
        thread = FakeChannel(
            message.id, PUBLIC_THREAD, name, parent.guild_id, parent.id, owner_id=self.bot.id
        )
        self.channels[thread.id] = thread
        data = thread.payload()
        member = {
            "id": str(thread.id),
            "user_id": str(self.bot.id),
            "join_timestamp": _now_iso(),
            "flags": 1,
        }
        await self.dispatch(
            "THREAD_CREATE", {**data, "newly_created": True, "member": member}, parent.guild_id
        )
        return _json_response(data, 201)

    async def _sync(self, application_id: str, *, body: list[JSON], **_: Any) -> web.Response:
        if int(application_id) != self.application_id:
            return _error(403, 50001, "Missing Access")
        self.commands = [
            {
                **command,
                "id": str(self.snowflake()),
                "application_id": application_id,
                "version": str(self.snowflake()),
                "default_member_permissions": command.get("default_member_permissions"),
                "type": command.get("type", 1),
                "description": command.get("description", ""),
            }
            for command in body
        ]
        return _json_response(self.commands)

    async def _cmds(self, application_id: str, **_: Any) -> web.Response:
        return _json_response(self.commands)

    # --- interactions ----------------------------------------------------------------------

    async def _interact(
        self,
        user: FakeUser,
        channel: FakeChannel,
        kind: int,
        data: JSON,
        message: FakeMessage | None,
    ) -> FakeInteraction:
        interaction = FakeInteraction(
            self.snowflake(), secrets.token_urlsafe(24), channel.id, time.monotonic()
        )
        self.interactions[interaction.id] = interaction
        payload: JSON = {
            "id": str(interaction.id),
            "application_id": str(self.application_id),
            "type": kind,
            "token": interaction.token,
            "version": 1,
            "data": data,
            "channel_id": str(channel.id),
            "channel": channel.payload(),
            "app_permissions": str((1 << 41) - 1),
            "locale": "en-US",
            "entitlements": [],
            "authorizing_integration_owners": {"0": str(self.guild_id)},
            "attachment_size_limit": 10 * 1024 * 1024,
        }
        if channel.guild_id is not None:
            payload.update(
                guild_id=str(channel.guild_id),
                guild_locale="en-US",
                member={**self._member(user), "permissions": str((1 << 41) - 1)},
                context=0,
            )
        else:
            payload.update(user=user.payload(), context=1)
        if message is not None:
            payload["message"] = message.payload()
        await self.dispatch("INTERACTION_CREATE", payload, channel.guild_id)
        return interaction

    async def _callback(
        self, interaction_id: str, token: str, *, body: JSON, query: dict[str, str]
    ) -> web.Response:
        interaction = self.interactions.get(int(interaction_id))
        if interaction is None or interaction.token != token:
            return _error(404, 10062, "Unknown interaction")
        if time.monotonic() - interaction.created > INTERACTION_ACK_DEADLINE:
            interaction.late = True
            return _error(404, 10062, "Unknown interaction")
        if interaction.callbacks:
            return _error(400, 40060, "Interaction has already been acknowledged.")
        interaction.callbacks.append(body)
        kind = int(body["type"])
        flags = int((body.get("data") or {}).get("flags") or 0)
        result: JSON = {
            "interaction": {
                "id": interaction_id,
                "type": 3,
                "response_message_loading": kind == 5,
                "response_message_ephemeral": bool(flags & EPHEMERAL),
            }
        }
        if kind == 4:
            result["resource"] = {"type": 4, "message": self._reply_to(interaction, body)}
        if query.get("with_response") in ("1", "true"):
            return _json_response(result)
        return web.Response(status=204)

    def _reply_to(self, interaction: FakeInteraction, body: JSON) -> JSON:
        data = body.get("data") or body
        message = FakeMessage(
            self.snowflake(),
            interaction.channel_id,
            self.bot,
            data.get("content") or "",
            flags=data.get("flags") or 0,
        )
        interaction.replies.append(message)
        return message.payload()

    async def _followup(
        self, application_id: str, token: str, *, body: JSON, **_: Any
    ) -> web.Response:
        interaction = next((i for i in self.interactions.values() if i.token == token), None)
        if interaction is None or int(application_id) != self.application_id:
            return _error(404, 10015, "Unknown Webhook")
        if not interaction.callbacks:
            return _error(404, 10015, "Unknown Webhook")
        return _json_response(self._reply_to(interaction, body))

    # --- state ---------------------------------------------------------------------------

    def _store(
        self,
        channel: FakeChannel,
        author: FakeUser,
        content: str,
        *,
        mentions: list[FakeUser] | None = None,
        components: list[JSON] | None = None,
        nonce: str | None = None,
        reference_id: int | None = None,
    ) -> FakeMessage:
        message = FakeMessage(
            self.snowflake(),
            channel.id,
            author,
            content,
            guild_id=channel.guild_id,
            mentions=mentions or [],
            components=components or [],
            nonce=nonce,
            reference_id=reference_id,
        )
        channel.messages.append(message)
        self.messages[message.id] = message
        return message
