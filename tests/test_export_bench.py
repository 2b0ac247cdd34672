"""bench/export.py keeps working: its generated store is one the real `koalabot export` reads."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from bench.export import build, measure


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
