"""The discord.py client behind the Discord adapter: intents, where it connects, the gateway
events it routes to the adapter, and what a failed connection means in plain words.

discord.py calls ``on_<event>`` on the client; each one hands the event to the adapter, whose
error boundary keeps a failure to that event. ``on_error`` is discord.py's last resort for
anything else, and logs one line without the exception's text.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import TYPE_CHECKING, Any

import discord
import yarl
from discord import app_commands

from koalabot.config import Settings
from koalabot.errors import KoalabotError

from ..boundary import describe
from .buttons import ChoiceButton, ConsentButton, FeedbackButton

if TYPE_CHECKING:
    from .app import DiscordAdapter

log = logging.getLogger(__name__)


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
        for opt_out in (True, False):
            self.tree.add_command(_consent_command(opt_out=opt_out))

    async def setup_hook(self) -> None:
        self.add_dynamic_items(FeedbackButton, ConsentButton, ChoiceButton)
        if self.shard_id in (None, 0):  # one process registers the commands
            try:
                await self.tree.sync()
            except discord.HTTPException as exc:
                log.warning("could not register the /new, /optout and /optin commands: %s", exc)

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

    async def on_choice_button(
        self, interaction: discord.Interaction[Any], a_id: int, b_id: int, choice: str
    ) -> None:
        await self.adapter.choose(interaction, a_id, b_id, choice)

    async def on_consent_button(
        self, interaction: discord.Interaction[Any], *, opt_out: bool
    ) -> None:
        await self.adapter.consent(interaction, opt_out=opt_out)

    async def on_error(self, event_method: str, /, *args: Any, **kwargs: Any) -> None:
        """discord.py's last resort (the adapter's boundary catches first): one line, no text."""
        error = sys.exc_info()[1]
        cause = describe(error) if error is not None else "unknown error"
        log.error("error while handling the Discord event %s: %s", event_method, cause)


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


def connect_error(
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


def log_exit(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("the Discord connection ended", exc_info=task.exception())


def _consent_command(*, opt_out: bool) -> app_commands.Command[Any, ..., None]:
    """/optout or /optin: keep (or stop keeping) what the person says out of training data."""
    name = "optout" if opt_out else "optin"
    about = (
        "Keep what I say and vote out of training data (you still get answers)"
        if opt_out
        else "Let my conversations and votes be used as training data again"
    )

    @app_commands.command(name=name, description=about)
    @app_commands.allowed_contexts(guilds=True, dms=True, private_channels=False)
    async def command(interaction: discord.Interaction[Any]) -> None:
        if isinstance(interaction.client, KoalaClient):
            await interaction.client.adapter.consent(interaction, opt_out=opt_out)

    return command
