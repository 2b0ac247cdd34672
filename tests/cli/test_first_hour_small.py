"""Issue 19, item 7: the small things a person expects (the real command, in a subprocess)."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import tomllib
from datetime import timedelta
from importlib import metadata
from pathlib import Path

import pytest

from koalabot.config import Settings, load_settings
from koalabot.store.database import Database
from tests.cli.first_hour import clean_env, koalabot
from tests.fakes.discord import FakeDiscord
from tests.fakes.tgi import FakeTGI
from tests.helpers_data import START, Seed
from tests.reliability.process import running

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "koalabot.example.toml"
THREAD = json.dumps(
    [
        {"role": "user", "content": "Hello!"},
        {"role": "assistant", "content": "Hi!"},
        {"role": "user", "content": "Bye."},
    ]
)
KOALA = "BEGINNING OF CONVERSATION: USER: Hello! GPT:Hi!</s>USER: Bye. GPT:"


def test_version(tmp_path: Path) -> None:
    done = koalabot(tmp_path, "--version")

    assert done.returncode == 0
    assert done.stdout == f"koalabot {metadata.version('koalabot')}\n"


def test_the_license_file_is_the_license_pyproject_names() -> None:
    license_text = (ROOT / "LICENSE").read_text()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

    assert project["license"] == "Apache-2.0"
    assert "Apache License" in license_text and "Version 2.0, January 2004" in license_text


def _prompt(cwd: Path, *argv: str, **env: str) -> str:
    done = koalabot(cwd, "prompt", *argv, "-", stdin=THREAD, env=clean_env(**env))
    assert done.returncode == 0, done.stderr
    return done.stdout.rstrip("\n")


def test_config_is_found_in_koalabot_config_then_the_working_directory(tmp_path: Path) -> None:
    assert _prompt(tmp_path) == KOALA
    (tmp_path / "koalabot.toml").write_text('template = "koala-fastchat"\n')
    (tmp_path / "other.toml").write_text('template = "koala"\n')

    from_cwd = _prompt(tmp_path)
    from_variable = _prompt(tmp_path, KOALABOT_CONFIG="other.toml")
    from_flag = _prompt(tmp_path, "--config", "koalabot.toml", KOALABOT_CONFIG="other.toml")

    assert from_cwd != KOALA and "GPT: Hi!" in from_cwd
    assert from_variable == KOALA
    assert from_flag == from_cwd


def test_the_example_config_file_loads_with_every_line_uncommented(tmp_path: Path) -> None:
    shutil.copy(EXAMPLE, tmp_path / "koalabot.toml")
    assert _prompt(tmp_path) == KOALA  # as shipped: every value is the default

    lines = re.findall(r"^# ([a-z_]+ = .*?)(?:[ \t]+#.*)?$", EXAMPLE.read_text(), re.MULTILINE)
    uncommented = tmp_path / "all.toml"
    uncommented.write_text("\n".join(lines) + "\n")
    names = set(tomllib.loads(uncommented.read_text()))

    assert len(names) > 30 and names <= set(Settings.model_fields)
    load_settings(uncommented)


def test_export_platform_must_be_a_platform(tmp_path: Path) -> None:
    done = koalabot(tmp_path, "export", "--format", "kto", "--out", "-", "--platform", "slak")

    assert done.returncode == 2
    assert "argument --platform: invalid choice: 'slak'" in done.stderr


async def _voted_days(db: Database, days: list[int]) -> None:
    seed = Seed(db)
    for day in days:
        thread = await seed.thread(at=START + timedelta(days=day))
        await thread.ask("q")
        await thread.vote(await thread.answer("a"), "U2", 1)


def _tick_labels(svg: str) -> list[str]:
    """The labels of the chart's date axis (matplotlib writes each text as a comment)."""
    bottom = svg.split('id="axes_2"', 1)[1]
    return re.findall(r'<g id="xtick_\d+">.*?<!-- (.*?) -->', bottom, re.DOTALL)


@pytest.mark.parametrize(
    ("days", "ticks"),
    [([0], ["30", "May", "02"]), ([0, 13], None), ([0, 40, 150], None)],
    ids=["one day", "two weeks", "five months"],
)
async def test_the_stats_chart_ticks_whole_days_and_draws_one_day(
    db: Database, tmp_path: Path, days: list[int], ticks: list[str] | None
) -> None:
    await _voted_days(db, days)

    done = koalabot(tmp_path, "stats", "--database-url", db.url, "--plot", "chart.svg")

    assert done.returncode == 0, done.stderr
    svg = (tmp_path / "chart.svg").read_text()
    labels = _tick_labels(svg)
    assert 3 <= len(labels) <= 16
    assert not [label for label in labels if ":" in label]  # never hours
    if ticks is not None:
        assert labels == ticks
    assert "#1f77b4" in svg  # the model's series is drawn, one day included


async def test_discord_startup_says_nothing_of_voice(
    fake_discord: FakeDiscord, fake_tgi: FakeTGI, tmp_path: Path
) -> None:
    from tests.reliability.process import bot_env

    env = bot_env(f"sqlite:///{tmp_path / 'bot.db'}", fake_tgi, discord=fake_discord)
    async with running(["discord"], env) as bot:
        await asyncio.sleep(1)
        log = "\n".join(bot.lines)

    assert "voice" not in log.lower()
    assert log  # the bot did log its start
