"""Slack adapter: a slack-bolt AsyncApp in Socket Mode or behind an HTTP Events endpoint.

Bolt acks every request at once (``process_before_response=False``) and runs the listeners
after, so Slack never waits on the model. Listeners turn events into koalabot events
(``slack_events``) and answer through a ``SlackReplySink`` (``slack_sink``); the engine does
the rest. Duplicate deliveries — Slack's retries, and a mention arriving as both ``message``
and ``app_mention`` — carry the same dedupe keys, and the engine answers them once.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.app.async_app import AsyncApp
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.say.async_say import AsyncSay
from slack_bolt.context.set_suggested_prompts.async_set_suggested_prompts import (
    AsyncSetSuggestedPrompts,
)
from slack_bolt.middleware.assistant.async_assistant import AsyncAssistant
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from koalabot.adapter import RunOptions
from koalabot.config import Settings
from koalabot.engine.inflight import InFlight
from koalabot.engine.notices import slack_vote_words
from koalabot.errors import ConfigError
from koalabot.events import Clicked, FeedbackEvent, ThreadKey

from ..boundary import boundary
from .buttons import (
    ACTION_CHOICE,
    ACTION_DOWN,
    ACTION_OPT_OUT,
    ACTION_REGENERATE,
    ACTION_UP,
    parse_choice,
)
from .events import (
    button_vote,
    chat_message,
    clicked_by,
    consent_command,
    is_human_post,
    reaction_vote,
    thread_key,
)
from .sink import SlackReplySink
from .stream import ACTION_FEEDBACK, parse_feedback_value
from .streamsink import SlackStreamingSink, StreamingChoice
from .users import SlackUsers

if TYPE_CHECKING:
    from koalabot.engine.engine import Engine

log = logging.getLogger(__name__)

EVENTS_PATH = "/slack/events"
MODES = ("socket", "http")
GREETING = "Hi, I'm Koala. Ask me anything — or start with one of these:"
SUGGESTED_PROMPTS = (
    {"title": "Explain something simply", "message": "Explain how vaccines work, simply."},
    {"title": "Help me write", "message": "Help me write a polite reminder email."},
    {"title": "Brainstorm", "message": "Give me five ideas for a team offsite."},
)


def create_adapter(engine: Engine, settings: Settings, options: RunOptions) -> SlackAdapter:
    """The factory `koalabot run --platform slack` calls."""
    return SlackAdapter(engine, settings, options)


def _need(value: str | None, variable: str, why: str) -> str:
    if not value:
        raise ConfigError(f"{variable} is not set: {why}")
    return value


class CountingRateLimitHandler(AsyncRateLimitErrorRetryHandler):
    """slack_sdk's 429 handler (waits Retry-After), counting each wait for /metrics."""

    def __init__(self, counter: Any, max_retry_count: int) -> None:
        super().__init__(max_retry_count=max_retry_count)
        self._waits = counter.labels("slack")

    async def prepare_for_next_attempt_async(self, **kwargs: Any) -> None:
        self._waits.inc()
        await super().prepare_for_next_attempt_async(**kwargs)


class SlackAdapter:
    """One Slack app connection (Socket Mode or HTTP Events) feeding one Engine."""

    name = "slack"

    def __init__(self, engine: Engine, settings: Settings, options: RunOptions) -> None:
        if options.mode not in MODES:
            raise ConfigError(f"unknown Slack mode {options.mode!r} (use socket or http)")
        self.engine = engine
        self.settings = settings
        self.mode = options.mode
        self.bot_token = _need(
            settings.slack_bot_token,
            "SLACK_BOT_TOKEN",
            "give the bot token (xoxb-…) from the Slack app's OAuth & Permissions page",
        )
        socket = self.mode == "socket"
        self.app_token = (
            _need(
                settings.slack_app_token,
                "SLACK_APP_TOKEN",
                "Socket Mode needs an app-level token (xapp-…) with connections:write "
                "(or run with --mode http)",
            )
            if socket
            else None
        )
        self.signing_secret = (
            None
            if socket
            else _need(
                settings.slack_signing_secret,
                "SLACK_SIGNING_SECRET",
                "HTTP mode needs the signing secret from the app's Basic Information page "
                "(or run with --mode socket)",
            )
        )
        self.host = settings.host
        self.port = options.port if options.port is not None else settings.port
        #: `koalabot run`'s HTTP application: HTTP mode adds its route there (one port).
        self.web_app = options.web_app
        self.bot_user_id: str | None = None
        self.client: AsyncWebClient | None = None
        self.users: SlackUsers | None = None
        self.app: AsyncApp | None = None
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None
        self._socket: AsyncSocketModeHandler | None = None
        self._inflight = InFlight()
        self.streaming = StreamingChoice(settings.slack_streaming)
        self._stopping = False

    @property
    def url(self) -> str:
        """The HTTP Events endpoint (HTTP mode, once started) — the app's Request URL."""
        return f"http://{self.host}:{self.port}{EVENTS_PATH}"

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Check the tokens with Slack, then listen (Socket Mode or HTTP)."""
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        self.client = AsyncWebClient(
            token=self.bot_token,
            base_url=self.settings.slack_api_url,
            session=self._session,
            retry_handlers=[
                AsyncConnectionErrorRetryHandler(max_retry_count=2),
                CountingRateLimitHandler(self.engine.metrics.rate_limit_waits, max_retry_count=5),
            ],
        )
        try:
            await self._identify(self.client)
            self.users = SlackUsers(self.client)
            self.app = self._build_app(self.client)
            if self.mode == "http":
                await self._serve_http(self.app)
            else:
                await self._connect_socket(self.app, self.client)
        except BaseException:
            await self._session.close()
            raise
        log.info("slack adapter running in %s mode as %s", self.mode, self.bot_user_id)

    async def stop(self) -> None:
        """Stop taking events, let running answers finish (up to shutdown_grace), disconnect."""
        self._stopping = True
        if self._socket is not None:
            await self._socket.close_async()  # type: ignore[no-untyped-call]
        if self._runner is not None:
            await self._runner.cleanup()
        await self._inflight.finish(self.settings.shutdown_grace)
        if self._session is not None:
            await self._session.close()

    async def _identify(self, client: AsyncWebClient) -> None:
        try:
            identity = await client.auth_test()
        except SlackApiError as exc:
            error = exc.response.get("error")
            raise ConfigError(f"SLACK_BOT_TOKEN was rejected by Slack ({error})") from None
        except aiohttp.ClientError as exc:
            raise ConfigError(
                f"cannot reach the Slack API at {self.settings.slack_api_url} "
                f"(KOALABOT_SLACK_API_URL): {exc}"
            ) from None
        self.bot_user_id = str(identity["user_id"])

    async def _serve_http(self, app: AsyncApp) -> None:
        """Route POST /slack/events to bolt: on the process's HTTP app if there is one (its
        owner serves it), else on a server of our own."""

        async def events(request: web.Request) -> web.Response:
            if self._stopping:  # Slack retries later, when another replica (or we) can answer
                return web.Response(status=503, text="shutting down")
            if not _verifiable(request.headers, await request.read()):
                return web.Response(status=401, text="invalid request")
            return await to_aiohttp_response(
                await app.async_dispatch(await to_bolt_request(request))
            )

        if self.web_app is not None:
            self.web_app.router.add_post(EVENTS_PATH, events)
            return
        web_app = web.Application()
        web_app.router.add_post(EVENTS_PATH, events)
        self._runner = web.AppRunner(web_app, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()
        self.port = int(self._runner.addresses[0][1])

    async def _connect_socket(self, app: AsyncApp, client: AsyncWebClient) -> None:
        assert self.app_token is not None
        try:  # ask for the WebSocket URL here, so a bad app token fails start() clearly
            opened = await client.apps_connections_open(app_token=self.app_token)
        except SlackApiError as exc:
            error = exc.response.get("error")
            raise ConfigError(f"SLACK_APP_TOKEN was rejected by Slack ({error})") from None
        self._socket = AsyncSocketModeHandler(app, app_token=self.app_token, web_client=client)
        self._socket.client.wss_uri = str(opened["url"])
        await self._socket.connect_async()  # type: ignore[no-untyped-call]

    # --- the bolt app --------------------------------------------------------------------

    def _build_app(self, client: AsyncWebClient) -> AsyncApp:
        app = AsyncApp(
            name="koalabot",
            client=client,
            signing_secret=self.signing_secret or "",
            request_verification_enabled=self.mode == "http",
            process_before_response=False,
        )
        assistant = AsyncAssistant()
        assistant.thread_started(self._on_assistant_thread_started)
        assistant.user_message(self._on_assistant_message)
        app.assistant(assistant)
        app.event("app_mention")(self._on_mention)
        app.event("message")(self._on_message)
        app.event("reaction_added")(self._on_reaction)
        app.event("reaction_removed")(self._on_reaction)
        app.action(ACTION_UP)(self._on_vote)
        app.action(ACTION_DOWN)(self._on_vote)
        app.action(ACTION_FEEDBACK)(self._on_vote)  # Slack's feedback_buttons under a stream
        app.action(ACTION_REGENERATE)(self._on_regenerate)
        app.action(ACTION_OPT_OUT)(self._on_opt_out)
        app.action(re.compile("^" + re.escape(ACTION_CHOICE)))(self._on_choice)
        return app

    def sink_for(self, where: ThreadKey) -> SlackStreamingSink:
        """A sink for an existing thread (to tell it about an answer a crash cut off)."""
        return self._sink(where.channel, where.thread)

    def _sink(
        self,
        channel: str,
        thread_ts: str,
        *,
        assistant: bool = False,
        team: str | None = None,
        user: str | None = None,
    ) -> SlackStreamingSink:
        """A sink for one answer: streamed to ``user`` of ``team`` where Slack lets it."""
        assert self.client is not None
        edits = SlackReplySink(
            self.client,
            channel,
            thread_ts,
            edit_interval=self.settings.edit_interval,
            assistant=assistant,
        )
        return SlackStreamingSink(
            edits, self.streaming, recipient_team_id=team, recipient_user_id=user
        )

    async def _answer(
        self, body: dict[str, Any], event: dict[str, Any], *, assistant: bool = False
    ) -> None:
        msg = chat_message(body, event, self.bot_user_id)
        sink = self._sink(
            msg.where.channel,
            msg.where.thread,
            assistant=assistant,
            team=msg.where.workspace or None,
            user=msg.user,
        )
        with self._inflight.track():  # the error boundary: what escapes becomes a notice
            async with boundary("a Slack message", sink.notice):
                if (opt_out := consent_command(event)) is not None:  # `optout` in a DM
                    await sink.notice(await self.engine.consent("slack", msg.user, opt_out=opt_out))
                    return
                await self.engine.handle_message(msg, sink)

    # --- listeners -----------------------------------------------------------------------

    async def _on_mention(self, body: dict[str, Any], event: dict[str, Any]) -> None:
        if is_human_post(event):
            await self._answer(body, event)

    async def _on_message(self, body: dict[str, Any], event: dict[str, Any]) -> None:
        """DMs always; elsewhere only replies in threads the bot already takes part in."""
        if not is_human_post(event):
            return
        if event.get("channel_type") != "im":
            if not event.get("thread_ts"):
                return  # a channel post; a mention in it arrives as app_mention
            if not await self.engine.knows_thread(thread_key(body, event)):
                return
        await self._answer(body, event)

    async def _on_assistant_message(self, body: dict[str, Any], event: dict[str, Any]) -> None:
        await self._answer(body, event, assistant=True)

    async def _on_assistant_thread_started(
        self, say: AsyncSay, set_suggested_prompts: AsyncSetSuggestedPrompts
    ) -> None:
        await say(GREETING)
        await set_suggested_prompts(prompts=list(SUGGESTED_PROMPTS))

    async def _on_reaction(self, event: dict[str, Any]) -> None:
        vote = reaction_vote(event, self.bot_user_id)
        if vote is None:
            return
        if not vote.is_bot and self.users is not None and await self.users.is_bot(vote.user):
            log.info("reaction by bot user %s is not a vote", vote.user)
            return
        with self._inflight.track():
            async with boundary("a Slack reaction"):  # no one to tell: a reaction has no reply
                result = await self.engine.handle_feedback(vote)
                if (result.recorded or result.kept) and vote.channel:
                    thread = result.where.thread if result.where else None
                    await self._acknowledge(
                        vote.channel, vote.user, slack_vote_words(result), thread
                    )

    async def _on_vote(self, ack: AsyncAck, body: dict[str, Any], action: dict[str, Any]) -> None:
        await ack()
        rating, action = _rating_of(action)
        vote = button_vote(body, action)
        if vote is None:
            return
        with self._inflight.track():
            async with boundary("a Slack vote button"):
                result = await self.engine.handle_feedback(
                    FeedbackEvent(
                        platform="slack",
                        user=vote.user,
                        rating=rating,
                        answer_id=vote.answer_id,
                        channel=vote.channel,
                        platform_message_id=vote.message_ts,
                    )
                )
                await self._acknowledge(
                    vote.channel, vote.user, slack_vote_words(result), vote.thread_ts
                )

    async def _on_regenerate(
        self, ack: AsyncAck, body: dict[str, Any], action: dict[str, Any]
    ) -> None:
        await ack()
        vote = button_vote(body, action)
        if vote is None:
            return
        team = (body.get("team") or {}).get("id")
        sink = self._sink(
            vote.channel,
            vote.thread_ts,
            assistant=vote.channel.startswith("D"),
            team=str(team) if team else None,
            user=vote.user,
        )
        with self._inflight.track():
            async with boundary("a Slack regenerate button", sink.notice):
                clicked = Clicked(vote.channel, vote.message_ts)
                result = await self.engine.regenerate(vote.answer_id, vote.user, sink, clicked)
                if result.status == "not_this_answer":
                    await self._acknowledge(vote.channel, vote.user, result.notice, vote.thread_ts)

    async def _on_choice(self, ack: AsyncAck, body: dict[str, Any], action: dict[str, Any]) -> None:
        """A battle's choice under answer B: recorded, and the chooser told privately."""
        await ack()
        parsed = parse_choice(str(action.get("action_id", "")), str(action.get("value", "")))
        click = button_vote(body, {**action, "value": "0"})
        if parsed is None or click is None:
            return
        a_id, b_id, choice = parsed
        with self._inflight.track():
            async with boundary("a Slack battle choice"):
                clicked = Clicked(click.channel, click.message_ts)
                words = await self.engine.choose(a_id, b_id, click.user, choice, clicked)
                await self._acknowledge(click.channel, click.user, words, click.thread_ts)

    async def _on_opt_out(self, ack: AsyncAck, body: dict[str, Any]) -> None:
        await ack()
        if (clicked := clicked_by(body)) is not None:
            user, channel, thread_ts = clicked
            with self._inflight.track():
                async with boundary("the Opt out button"):
                    words = await self.engine.consent("slack", user, opt_out=True)
                    await self._acknowledge(channel, user, words, thread_ts)

    async def _acknowledge(self, channel: str, user: str, text: str, thread_ts: str | None) -> None:
        """A quiet note only the voter sees."""
        assert self.client is not None
        try:
            await self.client.chat_postEphemeral(
                channel=channel, user=user, text=text, thread_ts=thread_ts
            )
        except SlackApiError as exc:
            log.info("could not acknowledge a vote: %s", exc.response.get("error"))


def _rating_of(action: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """The vote of a 👍/👎 click, and the action with the answer id as its value: a classic
    button says the vote in its action id, Slack's feedback_buttons in the value."""
    if action.get("action_id") != ACTION_FEEDBACK:
        return (1 if action.get("action_id") == ACTION_UP else -1), action
    rating, answer_id = parse_feedback_value(str(action.get("value", ""))) or (0, "")
    return rating, {**action, "value": str(answer_id)}


def _verifiable(headers: Any, raw: bytes) -> bool:
    """What bolt's signature check can take without raising (a 500): a UTF-8 body and an
    ASCII-digit timestamp. Anything else is not from Slack: 401, like a bad signature."""
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    stamp = str(headers.get("X-Slack-Request-Timestamp", ""))
    return stamp.isascii() and stamp.isdigit()


__all__ = ["EVENTS_PATH", "SlackAdapter", "create_adapter"]
