"""The log holds no message text, token or password, even while everything goes wrong.

A fault run on the real Slack adapter (HTTP mode) and engine, logging set up as `koalabot run`
sets it up at INFO: a request with a bad signature, a write while another process holds the
SQLite write lock, and the model server gone. The whole log (INFO and up), /healthz and the
CLI's error line are then searched for sentinel strings.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from koalabot.cli import main
from koalabot.cli.logs import setup_logging
from koalabot.http import ops_app
from koalabot.logsafe import mask_urls
from tests.fakes.slack import FakeSlack, Message
from tests.fakes.tgi import FakeTGI
from tests.fixtures.db import write_locked
from tests.fixtures.slack import StartSlackBot

PASSWORD = "pw-SENTINEL-9d41c0"
LOCKED_TEXT = "diary SENTINEL written while the database was locked"
BAD_SIGNATURE_TEXT = "forged SENTINEL body nobody signed"
DOWN_TEXT = "question SENTINEL asked while the model was down"


@pytest.fixture
def captured_log() -> Iterator[io.StringIO]:
    """The root logger as `koalabot run --log-level INFO` configures it, written to a buffer."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    setup_logging("INFO", "text")
    buffer = io.StringIO()
    handler = root.handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(buffer)
    # Whatever level an operator gives the Slack library's own lines, bodies stay out.
    bolt = logging.getLogger("slack_bolt")
    bolt_level = bolt.level
    bolt.setLevel(logging.INFO)
    try:
        yield buffer
    finally:
        bolt.setLevel(bolt_level)
        root.handlers[:], level = saved
        root.setLevel(level)


def _with_password(url: str) -> str:
    return url.replace("http://", f"http://koala:{PASSWORD}@")


async def _healthz(app: web.Application) -> str:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{port}/healthz") as response,
        ):
            return await response.text()
    finally:
        await runner.cleanup()


async def _replied(slack: FakeSlack, msg: Message) -> None:
    await slack.wait_for(lambda: slack.final_answer(msg.channel, msg.ts), within=30)


async def _logged(log: io.StringIO, line: str) -> None:
    for _ in range(600):
        if line in log.getvalue():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never logged {line!r}:\n{log.getvalue()}")


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # a SQLite write lock
async def test_a_fault_run_leaves_no_text_token_or_password_in_the_log(
    captured_log: io.StringIO,
    start_slack_bot: StartSlackBot,
    fake_tgi: FakeTGI,
    tmp_path: Path,
) -> None:
    db_file = tmp_path / "koalabot.db"  # the database_url fixture's file
    bot = await start_slack_bot(
        "http", tgi_url=_with_password(fake_tgi.url), spool_retry_interval=0.05
    )
    slack = bot.slack

    # A request whose signature does not match: refused, and its body is not logged.
    forged = Message("C0GENERAL", slack.new_ts(), "U0EVE", BAD_SIGNATURE_TEXT)
    body = slack.event_body(slack.message_event(forged))
    refused = await slack.post_signed(json.dumps(body).encode(), secret="not-the-secret")
    assert refused.status == 401

    # A write while another process holds the write lock: kept for later, then answered.
    with write_locked(db_file):
        locked = await slack.user_posts(LOCKED_TEXT, channel="D0ALICE", user="U0ALICE")
        await _logged(captured_log, "could not store a message")
    await _replied(slack, locked)

    # The model server gone: the person is told, the operator sees it in the log and /healthz.
    await fake_tgi.stop()
    await slack.user_posts(DOWN_TEXT, channel="D0BOB", user="U0BOB")
    await _logged(captured_log, "failed: BackendUnavailableError")
    health = await _healthz(ops_app(bot.engine))

    log = captured_log.getvalue()
    # The faults did happen, and were logged.
    assert "Invalid request signature detected" in log
    assert "could not store a message" in log
    secrets = [
        "SENTINEL",
        PASSWORD,
        slack.bot_token,
        slack.app_token,
        slack.signing_secret,
    ]
    for where, text in (("log", log), ("/healthz", health)):
        leaked = [s for s in secrets if s in text]
        assert not leaked, f"{where} holds {leaked}:\n{text}"
    assert "koala:***@" in log
    assert "koala:***@" in health


def test_cli_errors_mask_url_credentials(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conversation = tmp_path / "conversation.json"
    conversation.write_text(json.dumps([{"role": "user", "content": "hello"}]))
    url = f"http://koala:{PASSWORD}@127.0.0.1:9"  # the discard port: nothing answers
    code = main(["prompt", str(conversation), "--fit", "--tgi-url", url])
    err = capsys.readouterr().err
    assert code == 2
    assert "koala:***@127.0.0.1:9" in err
    assert PASSWORD not in err


def test_commands_without_logging_set_up_mask_their_warnings_too(tmp_path: Path) -> None:
    """`koalabot chat`, `export`, `review`… configure no logging: Python prints their warnings
    through its last-resort handler, which the CLI filters too."""
    script = (
        "import logging, sys\n"
        "from koalabot.cli import main\n"
        "main(['db', 'current', '--database-url', sys.argv[1]])\n"
        "logging.getLogger('koalabot.backend').warning('%s is down', sys.argv[2])\n"
    )
    url = f"http://koala:{PASSWORD}@127.0.0.1:9"
    done = subprocess.run(
        [sys.executable, "-c", script, f"sqlite:///{tmp_path / 'k.db'}", url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "koala:***@127.0.0.1:9 is down" in done.stderr
    assert PASSWORD not in done.stderr


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("GET http://u:p4ss@h:80/x failed", "GET http://u:***@h:80/x failed"),
        ("postgresql+asyncpg://bot:s3cret@db/koala", "postgresql+asyncpg://bot:***@db/koala"),
        ("https://ghp_TOKEN@github.com/x", "https://***@github.com/x"),
        ("mail dana@example.com at http://h/x?a=b", "mail dana@example.com at http://h/x?a=b"),
    ],
)
def test_mask_urls(text: str, masked: str) -> None:
    assert mask_urls(text) == masked


def test_slack_bolts_bad_signature_line_is_withheld(captured_log: io.StringIO) -> None:
    logging.getLogger("slack_bolt.AsyncApp").info(
        "Invalid request signature detected (signature: v0=abc, timestamp: 1, body: %s)",
        BAD_SIGNATURE_TEXT,
    )
    assert "Invalid request signature detected" in captured_log.getvalue()
    assert "SENTINEL" not in captured_log.getvalue()
