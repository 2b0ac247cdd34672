"""Starting and stopping the Slack adapter: missing or rejected credentials are one clear line,
not a trace; HTTP mode shares `koalabot run`'s port."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from koalabot.adapter import RunOptions
from koalabot.engine.engine import Engine
from koalabot.errors import ConfigError
from koalabot.http import ops_app
from koalabot_adapters.slack.app import create_adapter
from tests.fakes.slack import FakeSlack
from tests.fakes.tgi import FakeTGI
from tests.fixtures.slack import slack_settings


def test_a_missing_bot_token_stops_koalabot_run_with_one_line_naming_it(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if "SLACK" not in k.upper()}
    env["SLACK_APP_TOKEN"] = "xapp-1-fake"
    command = [sys.executable, "-m", "koalabot", "run", "--platform", "slack"]
    command += ["--database-url", f"sqlite:///{tmp_path / 'koalabot.db'}"]

    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)

    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("koalabot: error: SLACK_BOT_TOKEN is not set")


@pytest.fixture
async def engine_on(
    fake_slack: FakeSlack, fake_tgi: FakeTGI, sqlite_url: str
) -> AsyncIterator[Engine]:
    engine = await Engine.open(slack_settings(fake_slack, fake_tgi, sqlite_url))
    yield engine
    await engine.close()


@pytest.mark.parametrize(
    ("mode", "unset", "named"),
    [
        ("socket", "slack_app_token", "SLACK_APP_TOKEN"),
        ("http", "slack_signing_secret", "SLACK_SIGNING_SECRET"),
        ("socket", "slack_bot_token", "SLACK_BOT_TOKEN"),
    ],
)
async def test_each_mode_names_the_credential_it_lacks(
    engine_on: Engine, fake_slack: FakeSlack, fake_tgi: FakeTGI, mode: str, unset: str, named: str
) -> None:
    settings = slack_settings(
        fake_slack, fake_tgi, engine_on.settings.database_url, **{unset: None}
    )
    with pytest.raises(ConfigError, match=f"^{named} is not set: ") as error:
        create_adapter(engine_on, settings, RunOptions(mode=mode))
    assert "\n" not in str(error.value)
    with pytest.raises(ConfigError, match="unknown Slack mode 'webhook'"):
        create_adapter(engine_on, engine_on.settings, RunOptions(mode="webhook"))


@pytest.mark.parametrize(
    ("mode", "wrong", "named"),
    [
        ("http", "slack_bot_token", "SLACK_BOT_TOKEN"),
        ("socket", "slack_app_token", "SLACK_APP_TOKEN"),
    ],
)
async def test_a_token_slack_rejects_fails_start_with_its_name(
    engine_on: Engine, fake_slack: FakeSlack, fake_tgi: FakeTGI, mode: str, wrong: str, named: str
) -> None:
    settings = slack_settings(
        fake_slack, fake_tgi, engine_on.settings.database_url, **{wrong: "xoxb-revoked"}
    )
    adapter = create_adapter(engine_on, settings, RunOptions(mode=mode, port=0))

    with pytest.raises(ConfigError, match=rf"^{named} was rejected by Slack \(invalid_auth\)$"):
        await adapter.start()
    assert fake_slack.socket_connections == 0


async def test_http_mode_shares_the_ports_app_with_healthz(
    engine_on: Engine, fake_slack: FakeSlack, fake_tgi: FakeTGI
) -> None:
    web_app = ops_app(engine_on)  # what `koalabot run` serves on its port
    options = RunOptions(mode="http", port=0, web_app=web_app)
    adapter = create_adapter(engine_on, engine_on.settings, options)
    await adapter.start()
    runner = web.AppRunner(web_app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    fake_slack.events_url = base + "/slack/events"
    try:
        root = await fake_slack.user_posts(f"<@{fake_slack.bot_user_id}> hi")
        await fake_slack.wait_for(lambda: fake_slack.final_answer(root.channel, root.ts))
        async with aiohttp.ClientSession() as http, http.get(base + "/healthz") as health:
            assert health.status == 200

        await adapter.stop()
        late = await fake_slack.user_posts(f"<@{fake_slack.bot_user_id}> still there?")
    finally:
        await adapter.stop()
        await runner.cleanup()

    assert {d.status for b, d in fake_slack.deliveries if b["event"]["ts"] == late.ts} == {503}


def test_the_app_manifest_asks_for_what_the_adapter_uses() -> None:
    yaml = pytest.importorskip("yaml")  # PyYAML comes with huggingface_hub (text-generation)
    manifest = yaml.safe_load((Path(__file__).parents[3] / "slack-app-manifest.yaml").read_text())
    settings = manifest["settings"]

    assert set(settings["event_subscriptions"]["bot_events"]) >= {
        "app_mention",
        "message.channels",
        "message.groups",
        "message.im",
        "message.mpim",
        "reaction_added",
        "reaction_removed",
        "assistant_thread_started",
    }
    assert set(manifest["oauth_config"]["scopes"]["bot"]) >= {
        "app_mentions:read",
        "chat:write",
        "im:history",
        "channels:history",
        "reactions:read",
        "users:read",
        "assistant:write",
    }
    assert settings["socket_mode_enabled"] and settings["interactivity"]["is_enabled"]
    assert manifest["features"]["assistant_view"]["assistant_description"]
