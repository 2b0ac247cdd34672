"""Discord adapter: discord.py gateway events in, ChatMessages and FeedbackEvents to the engine.

A mention in a text channel opens a thread from that message and the answer goes there; every
later message in a thread the bot is in continues that conversation. A DM channel is one
conversation until `/new` starts a fresh one. Answers stream by message edits (the engine's
ReplyStreamer paces them; discord.py waits out 429s) and end with 👍 👎 🔄 buttons; thumbs
reactions on the bot's answers count as votes too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import discord
import yarl
from discord import app_commands

from koalabot.adapter import RunOptions
from koalabot.config import Settings
from koalabot.errors import ConfigError, KoalabotError
from koalabot.events import ChatMessage, FeedbackEvent, FeedbackResult, ThreadKey

from .buttons import RATINGS, FeedbackButton, reaction_rating
from .sink import DiscordReplySink

if TYPE_CHECKING:
    from koalabot.engine.engine import Engine

log = logging.getLogger(__name__)

PLATFORM = "discord"
THREAD_NAME_CHARS = 80
NEW_CONVERSATION = "Started a new conversation. I no longer see what we said before."
NEW_IN_GUILD = "Mention me in a channel to start a new conversation; each one gets its own thread."
VOTE_THANKS = {1: "Thanks, I noted your 👍.", -1: "Thanks, I noted your 👎."}
VOTE_UNKNOWN = "I could not find that answer any more, so the vote was not recorded."
VOTE_FAILED = "I could not save your vote just now. Please try again in a moment."
VOTE_KEPT = {
    1: "Thanks! My database is away for a moment: I'll record your 👍 as soon as it is back.",
    -1: "Thanks! My database is away for a moment: I'll record your 👎 as soon as it is back.",
    0: "My database is away for a moment: I'll remove your vote as soon as it is back.",
}
REGEN_UNKNOWN = "I could not find that answer any more, so I cannot try again."


class DiscordConnectError(KoalabotError):
    """Discord could not be reached, or refused the bot's login or intents."""


def intents() -> discord.Intents:
    """Guild messages, DMs, message content (privileged: enable it in the portal), reactions."""
    return discord.Intents(
        guilds=True,
        guild_messages=True,
        dm_messages=True,
        message_content=True,
        guild_reactions=True,
        dm_reactions=True,
    )


def point_at(api_url: str, gateway_url: str) -> tuple[str, yarl.URL]:
    """Send discord.py's REST calls and gateway connections to these URLs; returns the old ones.

    discord.py 2.7 has no per-client base URL: every Route (interaction callbacks included)
    reads the `Route.BASE` class attribute and the first gateway connection uses
    `DiscordWebSocket.DEFAULT_GATEWAY`. So one process talks to one Discord.
    """
    old = (discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY)
    discord.http.Route.BASE = api_url.rstrip("/")
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(gateway_url)
    return old


def clean_text(message: discord.Message, bot_id: int) -> str:
    """The message text without the bot's mention; other mentions become @names."""
    names = {user.id: user.display_name for user in message.mentions}

    def replace(match: re.Match[str]) -> str:
        user_id = int(match[1])
        if user_id == bot_id:
            return ""  # with the space after it
        return f"@{names[user_id]}{match[2]}" if user_id in names else match[0]

    return re.sub(r"<@!?(\d+)>([ \t]?)", replace, message.content).strip()


def thread_name(text: str) -> str:
    """A thread title from the first line of the question."""
    line = next((line for line in text.splitlines() if line.strip()), "")
    first = " ".join(line.split())
    if len(first) > THREAD_NAME_CHARS:
        first = first[: THREAD_NAME_CHARS - 1].rstrip() + "…"
    return first or "Koala"


def thread_key(guild_id: int | None, channel_id: int, thread: int | str) -> ThreadKey:
    """Where a Discord conversation lives (guild "" for DMs)."""
    return ThreadKey(PLATFORM, str(guild_id or ""), str(channel_id), str(thread))


def _vote_reply(result: FeedbackResult) -> str:
    if result.recorded:
        return VOTE_THANKS[result.rating]
    if result.kept:
        return VOTE_KEPT[result.rating]
    return VOTE_FAILED if result.reason == "store unavailable" else VOTE_UNKNOWN


class KoalaClient(discord.Client):
    """The discord.py client: routes gateway events to the adapter and never lets one kill it."""

    def __init__(
        self,
        adapter: DiscordAdapter,
        *,
        shard_id: int | None,
        shard_count: int | None,
        guild_ready_timeout: float,
    ) -> None:
        super().__init__(
            intents=intents(),
            allowed_mentions=discord.AllowedMentions.none(),  # a model must never ping @everyone
            shard_id=shard_id,
            shard_count=shard_count,
            guild_ready_timeout=guild_ready_timeout,
            max_messages=None,
        )
        self.adapter = adapter
        self.ready_event = asyncio.Event()
        self.tree = app_commands.CommandTree(self)
        self.tree.add_command(_new_command())

    async def setup_hook(self) -> None:
        self.add_dynamic_items(FeedbackButton)
        if self.shard_id in (None, 0):  # one process registers the commands
            try:
                await self.tree.sync()
            except discord.HTTPException as exc:
                log.warning("could not register the /new command: %s", exc)

    async def on_ready(self) -> None:
        log.info("connected to Discord as %s (shard %s)", self.user, self.shard_id)
        self.ready_event.set()

    async def on_message(self, message: discord.Message) -> None:
        await self.adapter.on_message(message)

    async def on_raw_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        await self.adapter.on_reaction(payload, removed=False)

    async def on_raw_reaction_remove(self, payload: discord.RawReactionActionEvent) -> None:
        await self.adapter.on_reaction(payload, removed=True)

    async def on_feedback_button(
        self, interaction: discord.Interaction[Any], action: str, answer_id: int
    ) -> None:
        await self.adapter.on_button(interaction, action, answer_id)

    async def on_error(self, event_method: str, /, *args: Any, **kwargs: Any) -> None:
        log.exception("error while handling the Discord event %s", event_method)


def _new_command() -> app_commands.Command[Any, ..., None]:
    @app_commands.command(name="new", description="Start a fresh conversation with me")
    @app_commands.allowed_contexts(guilds=True, dms=True, private_channels=False)
    async def new(interaction: discord.Interaction[Any]) -> None:
        if isinstance(interaction.client, KoalaClient):
            await interaction.client.adapter.new_conversation(interaction)

    return new


class RateLimitCounter(logging.Filter):
    """Counts discord.py's 429 waits for /metrics: it handles them itself and only logs them."""

    def __init__(self, counter: Any) -> None:
        super().__init__()
        self.counter = counter

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message.startswith("We are being rate limited") and "Retrying in" in message:
            self.counter.inc()
        return True


class DiscordAdapter:
    """A running Discord bot answering through one Engine."""

    name = PLATFORM

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        options: RunOptions | None = None,
        *,
        guild_ready_timeout: float = 2.0,
        start_timeout: float = 60.0,
    ) -> None:
        options = options or RunOptions()
        if not settings.discord_token:
            raise ConfigError(
                "DISCORD_TOKEN is not set: copy the bot token from the Developer Portal"
            )
        if (options.shard_id is None) != (options.shard_count is None):
            raise ConfigError("--shard-id and --shard-count must be given together")
        if (
            options.shard_count is not None
            and not 0 <= (options.shard_id or 0) < options.shard_count
        ):
            raise ConfigError("--shard-id must be at least 0 and less than --shard-count")
        self.engine = engine
        self.settings = settings
        self.options = options
        self.guild_ready_timeout = guild_ready_timeout
        self.start_timeout = start_timeout
        self.client: KoalaClient | None = None
        self._runner: asyncio.Task[None] | None = None
        self._old_urls: tuple[str, yarl.URL] | None = None
        self._dm_threads: dict[int, str] = {}  # DM channel → conversation started by /new
        self._tasks: set[asyncio.Task[Any]] = set()
        self._rate_limit_counter = RateLimitCounter(
            engine.metrics.rate_limit_waits.labels("discord")
        )

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Log in and connect; returns once the gateway is ready (raises if it cannot be)."""
        assert self.settings.discord_token is not None
        self._old_urls = point_at(self.settings.discord_api_url, self.settings.discord_gateway_url)
        logging.getLogger("discord.http").addFilter(self._rate_limit_counter)
        self.client = client = KoalaClient(
            self,
            shard_id=self.options.shard_id,
            shard_count=self.options.shard_count,
            guild_ready_timeout=self.guild_ready_timeout,
        )
        self._runner = asyncio.create_task(
            client.start(self.settings.discord_token), name="discord-client"
        )
        ready = asyncio.create_task(client.ready_event.wait())
        await asyncio.wait(
            {self._runner, ready}, timeout=self.start_timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if ready.done():
            self._runner.add_done_callback(_log_exit)
            return
        ready.cancel()
        error = self._runner.exception() if self._runner.done() else None
        # Logged in over HTTP but never held a gateway socket: whatever discord.py raised
        # (its reconnect loop can fail on its own missing socket), the gateway is what failed.
        gateway_failed = client.user is not None and client.ws is None
        await self.stop()
        raise _connect_error(error, self.settings, self.start_timeout, gateway_failed) from error

    async def stop(self) -> None:
        """Let answers in flight finish (up to shutdown_grace), then disconnect."""
        if self.client is None:
            return
        if not await self.drain(self.settings.shutdown_grace):
            pending = set(self._tasks)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await self.client.close()
        logging.getLogger("discord.http").removeFilter(self._rate_limit_counter)
        if self._runner is not None:
            # The client ends on its own once closed, unless it sleeps between reconnects.
            await asyncio.wait({self._runner}, timeout=5)
            self._runner.cancel()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await self._runner
        if self._old_urls is not None:
            point_at(self._old_urls[0], str(self._old_urls[1]))
        self.client = None

    async def drain(self, within: float) -> bool:
        """Wait until no event is being handled (new ones included); False if time ran out."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while self._tasks:
            left = deadline - loop.time()
            if left <= 0:
                return False
            await asyncio.wait(set(self._tasks), timeout=left)
        return True

    # --- messages -------------------------------------------------------------------------

    async def on_message(self, message: discord.Message) -> None:
        """Answer a mention, a message in a thread the bot is in, or any DM."""
        me = self.client.user if self.client else None
        if me is None or message.author.bot:
            return
        if message.type not in (discord.MessageType.default, discord.MessageType.reply):
            return
        guild_id = message.guild.id if message.guild else getattr(message.channel, "guild_id", None)
        with self._tracked():
            if guild_id is None:
                await self._in_dm(message)
            else:
                await self._in_guild(message, guild_id, me.id)

    async def _in_dm(self, message: discord.Message) -> None:
        channel_id = message.channel.id
        thread = self._dm_threads.get(channel_id) or await self.engine.latest_thread(
            PLATFORM, "", str(channel_id)
        )
        await self._answer(message, thread_key(None, channel_id, thread or channel_id))

    async def _in_guild(self, message: discord.Message, guild_id: int, bot_id: int) -> None:
        channel = message.channel
        here = thread_key(guild_id, channel.id, channel.id)
        mentioned = any(user.id == bot_id for user in message.mentions)
        if isinstance(channel, discord.Thread | discord.PartialMessageable):
            if mentioned or await self.engine.knows_thread(here):
                await self._answer(message, here)
            return
        if not mentioned:
            return
        thread_id = await self._open_thread(message, bot_id)
        if thread_id is None:  # no permission to open threads: answer right here instead
            key = thread_key(guild_id, channel.id, message.id)
            await self._answer(message, key, reply=True)
        else:
            await self._answer(message, thread_key(guild_id, thread_id, thread_id))

    async def _open_thread(self, message: discord.Message, bot_id: int) -> int | None:
        if not isinstance(message.channel, discord.TextChannel):
            return None
        try:
            thread = await message.create_thread(name=thread_name(clean_text(message, bot_id)))
        except discord.HTTPException as exc:
            if exc.code == 160004:  # already opened (a redelivered event): same id as the message
                return message.id
            log.warning("could not open a thread in channel %s: %s", message.channel.id, exc)
            return None
        return thread.id

    async def _answer(
        self, message: discord.Message, where: ThreadKey, reply: bool = False
    ) -> None:
        assert self.client is not None and self.client.user is not None
        chat = ChatMessage(
            where=where,
            user=str(message.author.id),
            text=clean_text(message, self.client.user.id),
            message_id=str(message.id),
            dedupe_keys=(f"discord:msg:{message.id}",),
            attachments=len(message.attachments),
        )
        channel = self._channel(int(where.channel), message.guild.id if message.guild else None)
        sink = DiscordReplySink(
            channel,
            edit_interval=self.settings.edit_interval,
            reply_to=channel.get_partial_message(message.id) if reply else None,
        )
        result = await self.engine.handle_message(chat, sink)
        log.debug("message %s in %s: %s", message.id, where, result.status)

    def sink_for(self, where: ThreadKey) -> DiscordReplySink:
        """A sink for an existing thread (to tell it about an answer a crash cut off)."""
        guild = int(where.workspace) if where.workspace else None
        channel = self._channel(int(where.channel), guild)
        return DiscordReplySink(channel, edit_interval=self.settings.edit_interval)

    def _channel(self, channel_id: int, guild_id: int | None) -> discord.PartialMessageable:
        assert self.client is not None
        return self.client.get_partial_messageable(channel_id, guild_id=guild_id)

    # --- commands and votes ---------------------------------------------------------------

    async def new_conversation(self, interaction: discord.Interaction[Any]) -> None:
        """/new: in a DM, the next message starts a conversation with no history."""
        if interaction.guild_id is not None or interaction.channel_id is None:
            await interaction.response.send_message(NEW_IN_GUILD, ephemeral=True)
            return
        self._dm_threads[interaction.channel_id] = str(interaction.id)
        await interaction.response.send_message(NEW_CONVERSATION)
        key = thread_key(None, interaction.channel_id, str(interaction.id))
        await self.engine.begin_thread(key)  # survives a restart before the next message

    async def on_button(
        self, interaction: discord.Interaction[Any], action: str, answer_id: int
    ) -> None:
        """👍/👎 record a vote (acknowledged at once, confirmed privately); 🔄 answers again."""
        with self._tracked():
            if action == "regen":
                await self._regenerate(interaction, answer_id)
                return
            await interaction.response.defer(ephemeral=True, thinking=True)
            vote = FeedbackEvent(
                PLATFORM,
                str(interaction.user.id),
                RATINGS[action],
                answer_id=answer_id,
                is_bot=interaction.user.bot,
            )
            result = await self.engine.handle_feedback(vote)
            await interaction.followup.send(_vote_reply(result), ephemeral=True)

    async def _regenerate(self, interaction: discord.Interaction[Any], answer_id: int) -> None:
        await interaction.response.defer()  # the new answer itself shows up in the thread
        if interaction.channel_id is None:
            return
        channel = self._channel(interaction.channel_id, interaction.guild_id)
        sink = DiscordReplySink(channel, edit_interval=self.settings.edit_interval)
        result = await self.engine.regenerate(answer_id, str(interaction.user.id), sink)
        if result.status == "unknown":
            await interaction.followup.send(REGEN_UNKNOWN, ephemeral=True)

    async def on_reaction(self, payload: discord.RawReactionActionEvent, *, removed: bool) -> None:
        """👍/👎 on one of the bot's messages by a person: add or remove that vote."""
        me = self.client.user if self.client else None
        rating = reaction_rating(payload.emoji)
        if me is None or rating is None or payload.user_id == me.id:
            return
        if payload.message_author_id not in (None, me.id):
            return
        user = payload.member or (self.client.get_user(payload.user_id) if self.client else None)
        if user is not None and user.bot:
            return
        vote = FeedbackEvent(
            PLATFORM,
            str(payload.user_id),
            rating,
            channel=str(payload.channel_id),
            platform_message_id=str(payload.message_id),
            removed=removed,
        )
        with self._tracked():
            await self.engine.handle_feedback(vote)

    @contextlib.contextmanager
    def _tracked(self) -> Iterator[None]:
        """Count the current task as work in flight, so stop() can wait for it."""
        task = asyncio.current_task()
        if task is None:
            yield
            return
        self._tasks.add(task)
        try:
            yield
        finally:
            self._tasks.discard(task)


def _connect_error(
    error: BaseException | None, settings: Settings, waited: float, gateway_failed: bool
) -> KoalabotError:
    if isinstance(error, discord.LoginFailure):
        return DiscordConnectError(
            "Discord rejected the bot token (DISCORD_TOKEN). Copy it again from the "
            "Developer Portal → your application → Bot → Reset Token."
        )
    if isinstance(error, discord.PrivilegedIntentsRequired):
        return DiscordConnectError(
            "Discord refused the Message Content intent. Turn it on in the Developer Portal → "
            "your application → Bot → Privileged Gateway Intents."
        )
    if error is None or gateway_failed:
        reason = f"nothing within {waited:.0f} s" if error is None else str(error)
        return DiscordConnectError(
            f"could not connect to the Discord gateway at {settings.discord_gateway_url} "
            f"(KOALABOT_DISCORD_GATEWAY_URL): {reason}"
        )
    return DiscordConnectError(
        f"could not connect to Discord at {settings.discord_api_url}: {error}"
    )


def _log_exit(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("the Discord connection ended", exc_info=task.exception())


def create_adapter(engine: Engine, settings: Settings, options: RunOptions) -> DiscordAdapter:
    """What `koalabot run --platform discord` calls."""
    return DiscordAdapter(engine, settings, options)
