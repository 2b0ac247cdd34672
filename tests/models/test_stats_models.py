"""`koalabot stats --models`: approval per model, battles, ratings and verdicts, as people read
them and as scripts do."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from koalabot.cli import main
from koalabot.store.database import Database
from koalabot.store.models import Judgement
from tests.helpers_data import START, Seed


async def koalabot(*argv: str) -> int:
    return await asyncio.to_thread(main, list(argv))


async def comparison(db: Database) -> None:
    """koala: 4 answers, 👍👍👍👎; candidate: 2 answers, 👎👎. Six battles between them, one
    with the sides swapped: from candidate's side 1 win, 3 losses, 1 tie, 1 both bad."""
    seed = Seed(db)
    thread = await seed.thread(channel="C1", at=START)
    koala, candidate = [], []
    for n, ratings in enumerate([{"U1": 1, "U2": 1}, {"U1": 1}, {"U3": -1}, {}]):
        await thread.ask(f"q{n}")
        koala.append(await thread.answer(f"k{n}", model="koala"))
        await thread.votes(koala[-1], ratings)
    for n in range(2):
        await thread.ask(f"r{n}")
        candidate.append(await thread.answer(f"c{n}", model="candidate"))
        await thread.votes(candidate[-1], {"U1": -1})
    pairs = [(koala[0], candidate[0], "a"), (koala[1], candidate[0], "a")]
    pairs += [(koala[2], candidate[1], "b"), (koala[3], candidate[1], "tie")]
    pairs += [(koala[0], candidate[1], "both_bad"), (candidate[0], koala[2], "b")]
    for a, b, choice in pairs:
        await seed.insert(
            Judgement, a_id=a, b_id=b, user="U9", choice=choice, created_at=START, updated_at=START
        )


async def test_models_report_for_scripts(db: Database, capsys: pytest.CaptureFixture[str]) -> None:
    await comparison(db)

    assert await koalabot("stats", "--models", "--format", "json", "--database-url", db.url) == 0

    report = json.loads(capsys.readouterr().out)
    models = {m["model"]: m for m in report["models"]}
    assert (models["koala"]["answers"], models["koala"]["up"], models["koala"]["down"]) == (4, 3, 1)
    assert models["koala"]["approval"] == 0.75
    assert models["koala"]["interval"] == {"low": pytest.approx(0.3006, abs=1e-4),
                                           "high": pytest.approx(0.9544, abs=1e-4)}  # fmt: skip
    assert models["candidate"]["approval"] == 0.0
    (pair,) = report["pairs"]
    assert (pair["a"], pair["b"], pair["battles"]) == ("candidate", "koala", 6)
    assert (pair["wins"], pair["losses"], pair["ties"], pair["both_bad"]) == (1, 3, 1, 1)
    assert pair["win_rate"] == 0.25
    assert report["ratings"]["koala"]["rating"] > report["ratings"]["candidate"]["rating"]
    battles, thumbs = report["verdicts"]
    assert battles == (
        "not enough data: candidate wins 25% of 4 decided battles with koala "
        f"(95% interval {pair['interval']['low']:.0%}–{pair['interval']['high']:.0%}), "
        "which includes an even split"
    )
    assert thumbs.startswith("not enough data: candidate 0% of 2 votes vs koala 75% of 4 ")


async def test_models_tables_and_the_model_filter(
    db: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    await comparison(db)

    await koalabot("stats", "--models", "--database-url", db.url)
    tables = capsys.readouterr().out
    await koalabot("stats", "--models", "--model", "koala", "--json", "--database-url", db.url)
    only = json.loads(capsys.readouterr().out)
    await koalabot("stats", "--model", "candidate", "--json", "--database-url", db.url)
    usage = json.loads(capsys.readouterr().out)

    lines = tables.splitlines()
    assert lines[0] == "Models"
    assert any(line.split() == ["koala", "4", "4", "75%", "30%–95%"] for line in lines)
    assert any(line.split()[:4] == ["candidate", "vs", "koala", "6"] for line in lines)
    assert "Bradley–Terry rating (Elo scale, 95% bootstrap interval)" in tables
    assert [m["model"] for m in only["models"]] == ["koala"]
    assert list(usage["models"]) == ["candidate"]
    assert usage["total"]["answers"] == 2


async def test_models_plot_draws_bands_and_the_win_matrix(
    db: Database, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await comparison(db)
    chart = tmp_path / "models.png"

    assert await koalabot("stats", "--models", "--plot", str(chart), "--database-url", db.url) == 0

    assert chart.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert chart.stat().st_size > 10_000
    assert f"chart written to {chart}" in capsys.readouterr().err
