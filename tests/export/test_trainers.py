"""The trainers people use accept `koalabot export` files unedited: TRL's SFTTrainer,
KTOTrainer and DPOTrainer run a few steps on a seeded export with finite loss, and TRL's own
format checks recognise each file.

TRL and torch live in their own virtual environment (never in the bot's install): point
KOALABOT_TRAINER_PYTHON at its interpreter (CI makes `.venv-trainers` and sets
KOALABOT_REQUIRE_TRAINERS=1, so there the test fails rather than skips). The script that runs
there is tests/trainers/trl_check.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path

import pytest

from koalabot.cli import main
from koalabot.store.database import Database, open_database
from tests.export.seeded import seed_feedback

pytestmark = pytest.mark.trainers

CHECK = Path(__file__).resolve().parents[1] / "trainers" / "trl_check.py"


def trainer_python() -> str:
    python = os.environ.get("KOALABOT_TRAINER_PYTHON", "")
    if python and Path(python).exists():
        return python
    reason = (
        "no trainers' environment: set KOALABOT_TRAINER_PYTHON to a Python with trl "
        "(python3 -m venv .venv-trainers && "
        ".venv-trainers/bin/pip install -r tests/trainers/requirements.txt)"
    )
    if os.environ.get("KOALABOT_REQUIRE_TRAINERS") == "1":
        pytest.fail(reason + " (KOALABOT_REQUIRE_TRAINERS=1)")
    pytest.skip(reason)


async def export(db: Database, kind: str, out: Path) -> Path:
    path = out / f"{kind}.jsonl"
    argv = ["export", "--format", kind, "--out", str(path), "--database-url", db.url]
    assert await asyncio.to_thread(main, argv) == 0
    return path


async def test_trl_trains_on_the_sft_kto_and_dpo_files_unedited(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    python = trainer_python()
    monkeypatch.setenv("KOALABOT_PSEUDONYM_SECRET", "0" * 64)
    db = await open_database(sqlite_url, upgrade=True)
    try:
        await seed_feedback(db)
        files = {kind: await export(db, kind, tmp_path) for kind in ("sft", "kto", "dpo")}
    finally:
        await db.close()

    done = await asyncio.to_thread(
        subprocess.run,
        [python, str(CHECK), *(f"--{kind}={path}" for kind, path in files.items())],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"},
    )

    assert done.returncode == 0, done.stderr[-4000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    for kind in ("sft", "kto", "dpo"):
        assert results[kind]["conversational"], kind
        assert results[kind]["finite"], (kind, results[kind]["losses"])
        assert len(results[kind]["losses"]) == 3, kind
    print(json.dumps({k: v["losses"] for k, v in results.items()}))
