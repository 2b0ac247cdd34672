"""`koalabot export` from the command line: options, output files, the summary, progress."""

from __future__ import annotations

import asyncio
import io
import json
import os
import pty
import select
from pathlib import Path

import pytest

from koalabot.cli import main
from koalabot.export import parallel as export_parallel
from koalabot.export.options import ExportOptions, Format
from koalabot.export.run import export
from koalabot.store.database import Database
from tests.helpers_data import Seed

pytestmark = pytest.mark.compiled_build


async def koalabot(*argv: str) -> int:
    """The console entry point, run as a user would (its own event loop, in a thread)."""
    return await asyncio.to_thread(main, list(argv))


async def seeded(db: Database) -> None:
    thread = await Seed(db).thread()
    await thread.ask("What is a koala?", author="U0AUTHOR1")
    liked = await thread.answer("A marsupial.")
    await thread.vote(liked, "U0VOTER01", 1)
    await thread.ask("Are they bears?", author="U0AUTHOR1")
    tie = await thread.answer("Yes.")
    await thread.votes(tie, {"U0VOTER01": 1, "U0VOTER02": -1})


@pytest.fixture(autouse=True)
def _no_ambient_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("KOALABOT_"):
            monkeypatch.delenv(name)


async def test_export_writes_the_file_and_a_summary(
    db: Database,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await seeded(db)
    monkeypatch.setenv("KOALABOT_PSEUDONYM_SECRET", "s3cret")
    (tmp_path / "out").mkdir()
    out = tmp_path / "out" / "kto.jsonl"

    code = await koalabot("export", "--format", "kto", "--out", str(out), "--database-url", db.url)

    assert code == 0
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["label"] for r in rows] == [True]
    assert "U0AUTHOR1" not in out.read_text(encoding="utf-8")
    err = capsys.readouterr().err
    assert f"wrote 1 kto row from 2 voted answers in 1 conversation to {out}" in err
    assert "1  net-zero votes" in err
    assert "pseudonymised" in err
    assert [p.name for p in out.parent.iterdir()] == ["kto.jsonl"]  # no partial file left


async def test_export_to_stdout_with_raw_ids(
    db: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    await seeded(db)

    code = await koalabot(
        "export", "--format", "sft", "--out", "-", "--no-pseudonymize", "--database-url", db.url
    )

    assert code == 0
    captured = capsys.readouterr()
    [row] = [json.loads(line) for line in captured.out.splitlines()]
    assert row["meta"]["authors"] == ["slack:U0AUTHOR1"]
    assert "wrote 1 sft row" in captured.err
    assert "user ids written raw" in captured.err


async def test_export_day_filters_take_whole_utc_days(
    db: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    await seeded(db)  # everything happens on 2024-05-01

    async def rows(*argv: str) -> int:
        await koalabot(
            "export", "--format", "kto", "--out", "-", "--no-pseudonymize",
            "--database-url", db.url, *argv,
        )  # fmt: skip
        return len(capsys.readouterr().out.splitlines())

    assert await rows("--since", "2024-05-01", "--until", "2024-05-01") == 1
    assert await rows("--until", "2024-04-30") == 0
    assert await rows("--since", "2024-05-02") == 0
    assert await rows("--since", "2024-05-01T12:00:00+00:00") == 1


async def test_workers_option_writes_the_same_file(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for _ in range(3):
        await seeded(db)
    monkeypatch.setattr(export_parallel, "RANGE", 1)  # a range per conversation
    written = []
    for workers in ("1", "2"):
        out = tmp_path / f"rows-{workers}.jsonl"
        code = await koalabot(
            "export", "--format", "koala", "--out", str(out), "--no-pseudonymize",
            "--workers", workers, "--database-url", db.url,
        )  # fmt: skip
        assert code == 0
        written.append(out.read_bytes())

    assert written[0] == written[1]
    assert len(written[0].splitlines()) == 3


async def test_export_rejects_bad_options(
    sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        await koalabot("export", "--format", "kto", "--out", "-", "--since", "yesterday")
    assert exited.value.code == 2
    assert "'yesterday' is not a date" in capsys.readouterr().err

    code = await koalabot(
        "export", "--format", "sft", "--string-prompt", "--no-pseudonymize", "--out", "-",
        "--database-url", sqlite_url,
    )  # fmt: skip
    assert code == 2
    assert "--string-prompt applies to kto and dpo" in capsys.readouterr().err

    with pytest.raises(SystemExit) as exited:
        await koalabot("export", "--format", "kto", "--out", "-", "--workers", "0")
    assert exited.value.code == 2
    assert "expected a whole number of at least 1" in capsys.readouterr().err


async def test_progress_line_on_a_terminal(db: Database) -> None:
    await seeded(db)
    leader, follower = pty.openpty()
    terminal = os.fdopen(follower, "w", encoding="utf-8")
    try:
        await export(db, ExportOptions(Format.KTO), io.StringIO(), progress=terminal)
        terminal.flush()
        shown = b""
        while select.select([leader], [], [], 0.2)[0]:
            shown += os.read(leader, 65536)
    finally:
        terminal.close()
        os.close(leader)

    text = shown.decode()
    assert "exporting: 1/1 conversations (100%), 1 rows" in text
    assert text.endswith("\r\x1b[K")  # erased before the summary


async def test_no_progress_line_when_not_a_terminal(db: Database) -> None:
    await seeded(db)
    stream = io.StringIO()

    await export(db, ExportOptions(Format.KTO), io.StringIO(), progress=stream)

    assert stream.getvalue() == ""


class FullDisk(io.StringIO):
    """An output whose writes fail, like a full disk or a reader that went away."""

    def write(self, text: str) -> int:
        raise OSError(28, "No space left on device")


async def test_a_failed_write_ends_the_export_cleanly(db: Database) -> None:
    await seeded(db)

    with pytest.raises(OSError, match="No space left"):
        await export(db, ExportOptions(Format.KTO), FullDisk())

    # The query was closed, not left hanging: the store answers the next export at once.
    out = io.StringIO()
    summary = await asyncio.wait_for(export(db, ExportOptions(Format.KTO), out), timeout=30)
    assert summary.rows == 1
