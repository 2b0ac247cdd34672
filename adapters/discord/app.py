"""Discord adapter: discord.py gateway events in, ChatMessages and FeedbackEvents to the engine.

A mention in a text channel opens a thread from that message and the answer goes there; every
later message in a thread the bot is in continues that conversation. A DM channel is one
conversation until `/new` starts a fresh one. Answers stream by message edits (the engine's
ReplyStreamer paces them; discord.py waits out 429s) and end with 👍 👎 🔄 buttons; thumbs
reactions on the bot's answers count as votes too.

This module wires the parts together and owns the lifecycle: ``client`` (the discord.py client
and connection errors), ``events`` (gateway payloads → koalabot events), ``sink`` (the reply
as REST calls) and ``buttons`` (the vote buttons and what a voter is told). Every handler runs
inside the error boundary (``koalabot_adapters.boundary``) and counts as work in flight, so
``stop`` lets it finish within the grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

import discord
import yarl

from koalabot.adapter import RunOptions
from koalabot.config import Settings
from koalabot.engine.inflight import InFlight
from koalabot.engine.notices import REGEN_UNKNOWN, discord_vote_reply
from koalabot.errors import ConfigError
from koalabot.events import Clicked, FeedbackEvent, ThreadKey

from ..boundary import Tell, boundary
from .buttons import RATINGS
from .client import (
    KoalaClient,
    RateLimitCounter,
    connect_error,
    log_exit,
    point_at,
)
from .events import (
    ANSWERABLE,
    PLATFORM,
    chat_message,
    clean_text,
    guild_of,
    reaction_vote,
    thread_key,
    thread_name,
)
from .sink import DiscordReplySink

if TYPE_CHECKING:
    from koalabot.engine.engine import Engine

log = logging.getLogger(__name__)

NEW_CONVERSATION = "Started a new conversation. I no longer see what we said before."
NEW_IN_GUILD = "Mention me in a channel to start a new conversation; each one gets its own thread."


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
        self._inflight = InFlight()
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
            self._runner.add_done_callback(log_exit)
            return
        ready.cancel()
        error = self._runner.exception() if self._runner.done() else None
        # Logged in over HTTP but never held a gateway socket: whatever discord.py raised
        # (its reconnect loop can fail on its own missing socket), the gateway is what failed.
        gateway_failed = client.user is not None and client.ws is None
        await self.stop()
        raise connect_error(error, self.settings, self.start_timeout, gateway_failed) from error

    async def stop(self) -> None:
        """Let answers in flight finish (up to shutdown_grace), then disconnect."""
        if self.client is None:
            return
        await self._inflight.finish(self.settings.shutdown_grace)
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
        return await self._inflight.wait(within)

    # --- messages -------------------------------------------------------------------------

    async def on_message(self, message: discord.Message) -> None:
        """Answer a mention, a message in a thread the bot is in, or any DM."""
        me = self.client.user if self.client else None
        if me is None or message.author.bot or message.type not in ANSWERABLE:
            return
        guild_id = guild_of(message)
        # Told only when the message was for the bot: a failure to learn whether the bot is in
        # a thread must not post into people's conversation among themselves.
        addressed = guild_id is None or any(user.id == me.id for user in message.mentions)
        tell = self._sink(message.channel.id, guild_id).notice if addressed else None
        with self._inflight.track():
            async with boundary("a Discord message", tell):
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
        mentioned = any(user.id == bot_id for user in message.mentions)
        if isinstance(channel, discord.Thread | discord.PartialMessageable):
            here = thread_key(guild_id, channel.id, channel.id, await self._parent_of(channel))
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
            await self._answer(message, thread_key(guild_id, thread_id, thread_id, channel.id))

    async def _parent_of(self, thread: discord.Thread | discord.PartialMessageable) -> int | None:
        """The channel a thread was opened from, for the channel settings; a thread not in
        discord.py's cache is asked for (GET /channels/{id}) only when such a setting is on."""
        if isinstance(thread, discord.Thread):
            return thread.parent_id
        if not (self.settings.allowed_channels or self.settings.battle_channels):
            return None
        assert self.client is not None
        try:
            fetched = await self.client.fetch_channel(thread.id)
        except discord.HTTPException as exc:
            log.warning("could not look up channel %s: %s", thread.id, exc)
            return None
        return getattr(fetched, "parent_id", None)

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
        chat = chat_message(message, where, self.client.user.id)
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
        return self._sink(int(where.channel), guild)

    def _sink(self, channel_id: int, guild_id: int | None) -> DiscordReplySink:
        channel = self._channel(channel_id, guild_id)
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
        with self._inflight.track():
            async with boundary("the /new command", _privately(interaction)):
                self._dm_threads[interaction.channel_id] = str(interaction.id)
                await interaction.response.send_message(NEW_CONVERSATION)
                key = thread_key(None, interaction.channel_id, str(interaction.id))
                await self.engine.begin_thread(key)  # survives a restart before the next message

    async def consent(self, interaction: discord.Interaction[Any], *, opt_out: bool) -> None:
        """/optout, /optin or the Opt out button: at once, confirmed to that person only."""
        with self._inflight.track():
            async with boundary("opting out or in", _privately(interaction)):
                user = str(interaction.user.id)
                words = await self.engine.consent(PLATFORM, user, opt_out=opt_out)
                await interaction.response.send_message(words, ephemeral=True)

    async def on_button(
        self, interaction: discord.Interaction[Any], action: str, answer_id: int
    ) -> None:
        """👍/👎 record a vote (acknowledged at once, confirmed privately); 🔄 answers again."""
        with self._inflight.track():
            async with boundary("a Discord button", _privately(interaction)):
                if action == "regen":
                    await self._regenerate(interaction, answer_id)
                else:
                    await self._vote(interaction, RATINGS[action], answer_id)

    async def choose(
        self, interaction: discord.Interaction[Any], a_id: int, b_id: int, choice: str
    ) -> None:
        """A battle's choice: recorded (acknowledged at once), confirmed privately."""
        with self._inflight.track():
            async with boundary("a Discord battle choice", _privately(interaction)):
                await interaction.response.defer(ephemeral=True, thinking=True)
                user = str(interaction.user.id)
                clicked = _clicked(interaction)
                words = await self.engine.choose(a_id, b_id, user, choice, clicked)
                await interaction.followup.send(words, ephemeral=True)

    async def _vote(
        self, interaction: discord.Interaction[Any], rating: int, answer_id: int
    ) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        clicked = _clicked(interaction)
        vote = FeedbackEvent(
            PLATFORM,
            str(interaction.user.id),
            rating,
            answer_id=answer_id,
            channel=clicked.channel,
            platform_message_id=clicked.message_id,
            is_bot=interaction.user.bot,
        )
        result = await self.engine.handle_feedback(vote)
        await interaction.followup.send(discord_vote_reply(result), ephemeral=True)

    async def _regenerate(self, interaction: discord.Interaction[Any], answer_id: int) -> None:
        await interaction.response.defer()  # the new answer itself shows up in the thread
        if interaction.channel_id is None:
            return
        sink = self._sink(interaction.channel_id, interaction.guild_id)
        user = str(interaction.user.id)
        result = await self.engine.regenerate(answer_id, user, sink, _clicked(interaction))
        if result.status in ("unknown", "not_this_answer"):
            await interaction.followup.send(result.notice or REGEN_UNKNOWN, ephemeral=True)

    async def on_reaction(self, payload: discord.RawReactionActionEvent, *, removed: bool) -> None:
        """👍/👎 on one of the bot's messages by a person: add or remove that vote."""
        me = self.client.user if self.client else None
        vote = reaction_vote(payload, me.id, removed=removed) if me is not None else None
        if vote is None:
            return
        user = payload.member or (self.client.get_user(payload.user_id) if self.client else None)
        if user is not None and user.bot:
            return
        with self._inflight.track():
            async with boundary("a Discord reaction"):  # no one to tell: a reaction has no reply
                await self.engine.handle_feedback(vote)


def _clicked(interaction: discord.Interaction[Any]) -> Clicked:
    """The message a button was clicked on ("" when Discord did not say)."""
    message = interaction.message
    return Clicked(str(interaction.channel_id or ""), str(message.id) if message else "")


def _privately(interaction: discord.Interaction[Any]) -> Tell:
    """A notice only the person who clicked or typed the command sees."""

    async def tell(text: str) -> None:
        if interaction.response.is_done():
            await interaction.followup.send(text, ephemeral=True)
        else:
            await interaction.response.send_message(text, ephemeral=True)

    return tell


def create_adapter(engine: Engine, settings: Settings, options: RunOptions) -> DiscordAdapter:
    """What `koalabot run --platform discord` calls."""
    return DiscordAdapter(engine, settings, options)
