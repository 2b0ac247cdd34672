"""`koalabot run` as a real child process, for tests that need signals, crashes or replicas.

bot = await BotProcess.start(["slack"], bot_env(...), "--mode", "http")
slack.events_url = bot.url("/slack/events")
...
assert await bot.stop() == 0      # SIGTERM, then wait
bot.records                       # the JSON log lines it wrote, parsed
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import sqlite3
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.fakes.discord import FakeDiscord
from tests.fakes.slack import FakeSlack, sign
from tests.fakes.tgi import FakeTGI

#: Prometheus samples by (name, labels).
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

#: Seconds to wait for `koalabot run` to be up (imports are slow on a busy CI machine).
STARTUP = 60.0
_LISTENING = re.compile(r"HTTP on [^:\s]+:(\d+)")


def bot_env(
    database_url: str,
    tgi: FakeTGI,
    *,
    slack: FakeSlack | None = None,
    discord: FakeDiscord | None = None,
    **settings: object,
) -> dict[str, str]:
    """The environment of a `koalabot run` on the fakes: only our settings, quick edits."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("KOALABOT_", "SLACK_")) and k != "DISCORD_TOKEN"
    }
    values: dict[str, object] = {
        "database_url": database_url,
        "tgi_url": tgi.url,
        "host": "127.0.0.1",
        "port": 0,
        "edit_interval": 0.05,
        "notice": "",
        "retries": 0,
        "health_check_interval": 0.05,
        "first_token_timeout": 5.0,
        "idle_timeout": 2.0,
        "log_format": "json",
        "slack_streaming": "off",  # the chat.update path unless a test asks for streaming
        "log_level": "INFO",
        # The test's own spool (tests/conftest.py), not the working directory's.
        "spool_path": os.environ.get("KOALABOT_SPOOL_PATH", ""),
    }
    if slack is not None:
        env["SLACK_BOT_TOKEN"] = slack.bot_token
        env["SLACK_SIGNING_SECRET"] = slack.signing_secret
        values["slack_api_url"] = slack.api_url
    if discord is not None:
        env["DISCORD_TOKEN"] = discord.token
        values["discord_api_url"] = discord.api_url
        values["discord_gateway_url"] = discord.gateway_url
    values.update(settings)
    env.update({f"KOALABOT_{name.upper()}": str(value) for name, value in values.items()})
    return env


@dataclass
class BotProcess:
    """A running `python -m koalabot run`; its stderr is read as it comes."""

    process: asyncio.subprocess.Process
    port: int = 0
    lines: list[str] = field(default_factory=list)
    _reader: asyncio.Task[None] | None = None

    @classmethod
    async def start(cls, platforms: list[str], env: dict[str, str], *args: str) -> BotProcess:
        """Start it and wait until its HTTP port is open (raises with its output if it dies)."""
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "koalabot",
            "run",
            "--platform",
            ",".join(platforms),
            *args,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        bot = cls(process)
        listening = asyncio.get_running_loop().create_future()
        bot._reader = asyncio.create_task(bot._read(listening))
        try:
            async with asyncio.timeout(STARTUP):
                bot.port = await listening
        except BaseException:
            await bot.kill()
            raise
        return bot

    async def _read(self, listening: asyncio.Future[int]) -> None:
        assert self.process.stderr is not None
        async for raw in self.process.stderr:
            line = raw.decode(errors="replace").rstrip("\n")
            self.lines.append(line)
            found = _LISTENING.search(line)
            if found and not listening.done():
                listening.set_result(int(found[1]))
        if not listening.done():
            listening.set_exception(
                RuntimeError("koalabot run exited early:\n" + "\n".join(self.lines))
            )

    def url(self, path: str) -> str:
        """A URL on the bot's HTTP port."""
        return f"http://127.0.0.1:{self.port}{path}"

    @property
    def output(self) -> str:
        """Everything it wrote to stderr so far."""
        return "\n".join(self.lines)

    @property
    def records(self) -> list[dict[str, Any]]:
        """Its log lines as JSON objects (run with log_format json)."""
        return [json.loads(line) for line in self.lines if line.strip()]

    async def stop(self, sig: signal.Signals = signal.SIGTERM, within: float = 30.0) -> int:
        """Send ``sig`` and wait for the exit; returns the exit code."""
        if self.process.returncode is None:
            self.process.send_signal(sig)
        async with asyncio.timeout(within):
            code = await self.process.wait()
            if self._reader is not None:
                await self._reader
        return code

    async def kill(self) -> None:
        """SIGKILL: a crash, nothing cleaned up."""
        if self.process.returncode is None:
            self.process.kill()
        await self.process.wait()
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await self._reader


@contextlib.asynccontextmanager
async def running(
    platforms: list[str], env: dict[str, str], *args: str
) -> AsyncIterator[BotProcess]:
    """A BotProcess that is killed after the block if it is still running."""
    bot = await BotProcess.start(platforms, env, *args)
    try:
        yield bot
    finally:
        await bot.kill()


async def get_json(url: str) -> tuple[int, Any]:
    """GET a URL; its status and JSON body."""
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        return response.status, await response.json(content_type=None)


async def post_signed(
    slack: FakeSlack, url: str, body: dict[str, Any], *, retry_num: int | None = None
) -> int:
    """POST one Events API body to ``url`` signed as Slack does; the status."""
    raw = json.dumps(body).encode()
    stamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        "X-Slack-Request-Timestamp": stamp,
        "X-Slack-Signature": sign(slack.signing_secret, stamp, raw),
    }
    if retry_num:
        headers.update({"X-Slack-Retry-Num": str(retry_num), "X-Slack-Retry-Reason": "http_error"})
    async with aiohttp.ClientSession() as http, http.post(url, data=raw, headers=headers) as resp:
        return resp.status


async def scrape(bot: BotProcess) -> tuple[str, Samples]:
    """GET /metrics: the raw text and every sample by (name, labels)."""
    async with aiohttp.ClientSession() as http, http.get(bot.url("/metrics")) as response:
        assert response.status == 200
        assert response.content_type == "text/plain"
        text = await response.text()
    samples = {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    return text, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value (0 when absent, as for a counter never incremented)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def sqlite_rows(path: Path, query: str) -> list[tuple[Any, ...]]:
    """Rows of a query on the SQLite file a bot process wrote."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return conn.execute(query).fetchall()
