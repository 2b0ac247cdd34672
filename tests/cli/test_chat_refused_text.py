"""`koalabot chat` with text a database would refuse, on SQLite and PostgreSQL: a NUL byte and
bytes that are not UTF-8 (Python reads them as lone surrogates) are stored with U+FFFD in their
place and answered; the next line is answered too, nothing is kept in the spool."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from koalabot.store.database import open_database
from koalabot.store.models import Message
from tests.fakes.tgi import FakeTGI
from tests.helpers_data import table_rows

R = "\N{REPLACEMENT CHARACTER}"


async def chat(tmp_path: Path, tgi_url: str, database_url: str, stdin: bytes) -> tuple[int, str]:
    env = {
        **os.environ,
        "KOALABOT_TGI_URL": tgi_url,
        "KOALABOT_DATABASE_URL": database_url,
        "KOALABOT_RETRIES": "1",
        "KOALABOT_NOTICE": "",
        "PYTHONIOENCODING": "utf-8:surrogateescape",  # as under a C or POSIX locale
    }
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "koalabot", "chat", "--user", "ada"),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=tmp_path,
        env=env,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin), 60)
    assert proc.returncode == 0, err.decode(errors="replace")
    return proc.returncode, out.decode(errors="replace")


async def test_nul_and_undecodable_bytes_are_stored_readable_and_answered(
    tmp_path: Path, fake_tgi: FakeTGI, migrated_database_url: str
) -> None:
    fake_tgi.replies.extend([" Eucalyptus.", " Twenty hours.", " Yes."])
    stdin = b"what do koalas\x00 eat?\ncaf\xe9 koala\xed\xa0\xbd sleeps how long?\ndone?\n"

    _, out = await chat(tmp_path, fake_tgi.url, migrated_database_url, stdin)

    assert [line for line in out.splitlines() if line] == ["Eucalyptus.", "Twenty hours.", "Yes."]
    db = await open_database(migrated_database_url)
    try:
        said = [m["text"] for m in await table_rows(db, Message) if m["role"] == "user"]
    finally:
        await db.close()
    assert said == [f"what do koalas{R} eat?", f"caf{R} koala{R * 3} sleeps how long?", "done?"]
    assert not (tmp_path / "koalabot-spool.db").exists()
