"""What `koalabot export` writes right now, for the opt-out tests of the adapters (issue 16,
item 7): the real CLI in a process of its own, as an operator runs it beside the bot."""

from __future__ import annotations

import asyncio
import os
import sys


async def exported(database_url: str) -> str:
    """Every koala row `koalabot export` writes now, as text."""
    env = {**os.environ, "KOALABOT_DATABASE_URL": database_url}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "koalabot", "export", "--format", "koala", "--out", "-", "--no-pseudonymize"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    return out.decode()
