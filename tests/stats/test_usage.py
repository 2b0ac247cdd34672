"""`koalabot stats`: counts by platform, channel, model and day, approval rates, the chart."""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from koalabot.cli import main
from koalabot.stats.usage import PlotUnavailableError, Report, gather, plot
from koalabot.store.database import Database
from tests.helpers_data import START, Seed


async def koalabot(*argv: str) -> int:
    return await asyncio.to_thread(main, list(argv))


async def traffic(db: Database) -> None:
    """Day 1: slack C1, koala-13b, 3 answers (liked, disliked, unvoted).
    Day 2: slack C2 with koala-7b (liked, net-zero) and a discord thread (liked)."""
    seed = Seed(db)
    c1 = await seed.thread(channel="C1", at=START)
    await c1.ask("q1")
    a = await c1.answer("a1")
    await c1.votes(a, {"U2": 1, "U3": 1})
    await c1.ask("q2")
    b = await c1.answer("a2")
    await c1.votes(b, {"U2": -1})
    await c1.ask("q3")
    await c1.answer("a3")
    day2 = START + timedelta(days=1)
    c2 = await seed.thread(channel="C2", at=day2)
    await c2.ask("q4")
    c = await c2.answer("a4", model="koala-7b")
    await c2.votes(c, {"U2": 1})
    await c2.ask("q5")
    d = await c2.answer("a5", model="koala-7b")
    await c2.votes(d, {"U2": 1, "U3": -1})
    dm = await seed.thread(platform="discord", channel="D1")
    await dm.ask("q6", author="111")
    e = await dm.answer("a6")
    await dm.votes(e, {"111": 1})


async def test_stats_counts_and_approval(db: Database, capsys: pytest.CaptureFixture[str]) -> None:
    await traffic(db)

    code = await koalabot("stats", "--json", "--database-url", db.url)

    assert code == 0
    report = json.loads(capsys.readouterr().out)
    total = report["total"]
    assert (total["user_messages"], total["answers"], total["votes"]) == (6, 6, 7)
    assert (total["voted"], total["liked"], total["disliked"]) == (5, 3, 1)
    assert total["approval"] == pytest.approx(3 / 5)
    assert report["platforms"]["discord"]["answers"] == 1
    assert report["platforms"]["slack"]["approval"] == pytest.approx(2 / 4)
    channels = {(c["platform"], c["channel"]): c for c in report["channels"]}
    assert channels[("slack", "C1")]["voted"] == 2 and channels[("slack", "C1")]["answers"] == 3
    assert channels[("slack", "C2")]["approval"] == pytest.approx(1 / 2)
    assert report["models"]["koala-7b"]["answers"] == 2
    assert report["models"]["koala-13b"]["approval"] == pytest.approx(2 / 3)
    assert report["days"]["2024-05-01"]["answers"] == 3
    assert report["days"]["2024-05-02"]["answers"] == 3
    assert report["days"]["2024-05-02"]["user_messages"] == 3


async def test_stats_tables_and_time_window(
    db: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    await traffic(db)

    await koalabot("stats", "--database-url", db.url)
    tables = capsys.readouterr().out
    await koalabot("stats", "--since", "2024-05-02", "--json", "--database-url", db.url)
    later = json.loads(capsys.readouterr().out)

    lines = tables.splitlines()
    assert lines[0].split() == [
        "total", "user", "msgs", "answers", "votes", "voted", "liked", "disliked", "approval",
    ]  # fmt: skip
    assert lines[1].split() == ["all", "6", "6", "7", "5", "3", "1", "60.0%"]
    assert any(line.split()[:3] == ["slack", "/", "C2"] for line in lines)
    assert any(line.startswith("2024-05-02") for line in lines)
    assert "approval = liked answers / voted answers" in tables
    assert list(later["days"]) == ["2024-05-02"]


async def test_stats_on_an_empty_store(db: Database, capsys: pytest.CaptureFixture[str]) -> None:
    assert await koalabot("stats", "--database-url", db.url) == 0
    assert capsys.readouterr().out == "no messages stored yet\n"


async def test_plot_draws_a_png(
    db: Database, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await traffic(db)
    chart = tmp_path / "stats.png"

    code = await koalabot("stats", "--plot", str(chart), "--database-url", db.url)

    assert code == 0
    assert chart.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert chart.stat().st_size > 10_000
    assert f"chart written to {chart}" in capsys.readouterr().err


async def test_plot_without_matplotlib_says_how_to_get_it(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await traffic(db)
    report = await gather(db)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed

    with pytest.raises(PlotUnavailableError, match=r"pip install 'koalabot\[plot\]'"):
        plot(report, tmp_path / "x.png")


def test_approval_is_undefined_without_votes() -> None:
    report = Report()
    assert report.total.approval is None
