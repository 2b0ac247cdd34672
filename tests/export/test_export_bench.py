"""bench/export.py keeps working: its generated store is one the real `koalabot export` reads."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from bench.export import baseline, build, measure, median_run, table

pytestmark = pytest.mark.compiled_build


def test_bench_database_exports_with_the_real_command(tmp_path: Path) -> None:
    db = tmp_path / "bench.db"

    counts = build(db, votes=300)
    result = measure(db, "kto", str(tmp_path / "rows.jsonl"))

    assert counts.votes >= 300
    with sqlite3.connect(db) as conn:
        answers = conn.execute("SELECT count(*) FROM messages WHERE role = 'assistant'").fetchone()
    # Every answer is voted on; only net-zero ones are left out.
    assert 0 < result.rows <= answers[0]
    assert len((tmp_path / "rows.jsonl").read_text().splitlines()) == result.rows
    assert result.peak_rss_mb > 0


def test_the_baseline_reads_every_message_and_the_median_run_is_reported(tmp_path: Path) -> None:
    db = tmp_path / "bench.db"
    build(db, votes=100)

    base = baseline(db)
    runs = [measure(db, "kto", str(tmp_path / f"rows{n}.jsonl")) for n in range(3)]
    middle = median_run(runs)

    with sqlite3.connect(db) as conn:
        messages = conn.execute("SELECT count(*) FROM messages").fetchone()[0]
    assert base.rows == messages and base.rows_per_s > 0
    assert sorted(r.seconds for r in runs)[1] == middle.seconds
    printed = table([middle], {"kto": runs}, base)
    assert "median of 3 runs" in printed and "x the CPU of a baseline row" in printed
    compiled = os.environ.get("KOALABOT_EXPECT_COMPILED") == "1"
    kind = "compiled with mypyc" if compiled else "plain Python"
    assert f"koalabot under test: {kind}" in printed
