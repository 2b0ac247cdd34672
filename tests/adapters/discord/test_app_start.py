"""Starting the Discord bot: what it asks Discord for, and what an operator is told when it
cannot start. Also `koalabot run --platform discord` as a real process."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from koalabot.adapter import RunOptions
from koalabot.engine.engine import Engine
from koalabot.errors import ConfigError
from koalabot_adapters.discord.app import DiscordAdapter
from koalabot_adapters.discord.client import DiscordConnectError
from tests.fakes.discord import FakeDiscord
from tests.fakes.tgi import FakeTGI
from tests.fixtures.discord import GUILD_READY_TIMEOUT, discord_settings_for

GUILDS, GUILD_MESSAGES, GUILD_REACTIONS, DM_MESSAGES, DM_REACTIONS, MESSAGE_CONTENT = (
    1 << 0,
    1 << 9,
    1 << 10,
    1 << 12,
    1 << 13,
    1 << 15,
)


@pytest.fixture
async def engine(
    fake_discord: FakeDiscord, fake_tgi: FakeTGI, sqlite_url: str
) -> AsyncIterator[Engine]:
    engine = await Engine.open(discord_settings_for(fake_discord, fake_tgi, sqlite_url))
    try:
        yield engine
    finally:
        await engine.close()


def adapter_for(
    engine: Engine, options: RunOptions | None = None, **settings: object
) -> DiscordAdapter:
    fake_settings = engine.settings.model_copy(update=settings)
    return DiscordAdapter(engine, fake_settings, options, guild_ready_timeout=GUILD_READY_TIMEOUT)


async def test_identify_asks_for_the_intents_and_the_shard(
    fake_discord: FakeDiscord, engine: Engine
) -> None:
    adapter = adapter_for(engine, RunOptions(shard_id=0, shard_count=2))
    await adapter.start()
    await adapter.stop()

    (identify,) = fake_discord.identifies
    wanted = (
        GUILDS | GUILD_MESSAGES | GUILD_REACTIONS | DM_MESSAGES | DM_REACTIONS | MESSAGE_CONTENT
    )
    assert identify["intents"] == wanted
    assert identify["shard"] == [0, 2]
    assert [c["name"] for c in fake_discord.commands] == ["new", "optout", "optin"]  # shard 0 only


async def test_heartbeats_carry_the_sequence_and_are_acknowledged(
    fake_discord: FakeDiscord, engine: Engine
) -> None:
    fake_discord.heartbeat_interval = 0.05
    adapter = adapter_for(engine)
    await adapter.start()
    try:
        await fake_discord.wait_for(lambda: len(fake_discord.heartbeats) >= 3)
        (session,) = fake_discord.sessions.values()
        assert fake_discord.heartbeats[-1] == session.seq  # the last event the client got
        assert adapter.client is not None and adapter.client.latency < 1  # ACKs arrived
        assert fake_discord.connections == 1
    finally:
        await adapter.stop()


async def test_other_shards_leave_the_commands_alone(
    fake_discord: FakeDiscord, engine: Engine
) -> None:
    adapter = adapter_for(engine, RunOptions(shard_id=1, shard_count=2))
    await adapter.start()
    await adapter.stop()

    assert fake_discord.identifies[0]["shard"] == [1, 2]
    assert not [path for method, path in fake_discord.requests if method == "PUT"]


async def test_a_wrong_token_is_named(fake_discord: FakeDiscord, engine: Engine) -> None:
    adapter = adapter_for(engine, discord_token="not-the-token")
    with pytest.raises(DiscordConnectError, match="DISCORD_TOKEN"):
        await adapter.start()
    assert fake_discord.identifies == []


async def test_a_missing_message_content_intent_says_where_to_enable_it(
    fake_discord: FakeDiscord, engine: Engine
) -> None:
    fake_discord.message_content_enabled = False
    adapter = adapter_for(engine)
    with pytest.raises(DiscordConnectError, match="Privileged Gateway Intents"):
        await adapter.start()


async def test_an_unreachable_discord_is_named(engine: Engine) -> None:
    adapter = adapter_for(engine, discord_api_url="http://127.0.0.1:9/api/v10")
    with pytest.raises(DiscordConnectError, match=r"127\.0\.0\.1:9"):
        await adapter.start()


@pytest.mark.parametrize("start_timeout", [0.2, 3.0])
async def test_an_unreachable_gateway_is_named(engine: Engine, start_timeout: float) -> None:
    # 0.2 s ends in the start timeout; 3 s lets discord.py's first reconnect run, which fails
    # inside discord.py itself because it never held a socket: both must name the gateway.
    settings = engine.settings.model_copy(update={"discord_gateway_url": "ws://127.0.0.1:9/"})
    adapter = DiscordAdapter(
        engine, settings, guild_ready_timeout=0.05, start_timeout=start_timeout
    )
    with pytest.raises(DiscordConnectError, match=r"Discord gateway at ws://127\.0\.0\.1:9/"):
        await adapter.start()


@pytest.mark.parametrize(
    ("options", "settings", "message"),
    [
        (RunOptions(), {"discord_token": None}, "DISCORD_TOKEN is not set"),
        (RunOptions(shard_id=0), {}, "--shard-id and --shard-count"),
        (RunOptions(shard_id=2, shard_count=2), {}, "less than --shard-count"),
    ],
)
def test_bad_configuration_is_refused_before_connecting(
    engine: Engine, options: RunOptions, settings: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        adapter_for(engine, options, **settings)


async def test_koalabot_run_answers_and_finishes_the_answer_on_sigterm(
    fake_discord: FakeDiscord, fake_tgi: FakeTGI, tmp_path: Path
) -> None:
    fake_tgi.token_delay = 0.02
    reply = " ".join(["Eucalyptus"] * 40)
    fake_tgi.replies.append(reply)
    env = {
        **os.environ,
        "DISCORD_TOKEN": fake_discord.token,
        "KOALABOT_DISCORD_API_URL": fake_discord.api_url,
        "KOALABOT_DISCORD_GATEWAY_URL": fake_discord.gateway_url,
        "KOALABOT_TGI_URL": fake_tgi.url,
        "KOALABOT_DATABASE_URL": f"sqlite:///{tmp_path / 'bot.db'}",
        "KOALABOT_EDIT_INTERVAL": "0.05",
        "KOALABOT_NOTICE": "",
        "KOALABOT_HOST": "127.0.0.1",
        "KOALABOT_PORT": "0",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "koalabot",
        "run",
        "--platform",
        "discord",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output = b""
    try:
        assert process.stdout is not None
        async with asyncio.timeout(60):
            while b"discord adapter running" not in output:
                line = await process.stdout.readline()
                assert line, f"koalabot run exited early:\n{output.decode()}"
                output += line
        alice = fake_discord.add_user("alice")
        question = await fake_discord.say(alice, fake_discord.channel_id, "hi", mention_bot=True)
        thread = await fake_discord.wait_for(lambda: fake_discord.thread_for(question.id))
        await fake_discord.wait_for(lambda: fake_discord.bot_messages(thread.id))
        process.send_signal(signal.SIGTERM)  # mid-answer: it finishes before leaving
        rest, _ = await asyncio.wait_for(process.communicate(), 60)
        output += rest
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

    assert process.returncode == 0, output.decode()
    (answer,) = fake_discord.bot_messages(thread.id)
    assert answer.content == reply and answer.components
    assert fake_discord.token not in output.decode()  # secrets never reach a log
