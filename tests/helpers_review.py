"""`koalabot review` as a real process, for tests that need its printed link."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
from collections.abc import AsyncIterator


@contextlib.asynccontextmanager
async def review_process(database_url: str, env: dict[str, str]) -> AsyncIterator[str]:
    """Start `koalabot review --port 0` on ``database_url``; yield the first line it prints;
    stop it with SIGTERM."""
    process = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "koalabot", "review", "--port", "0"],
        "--database-url",
        database_url,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        assert process.stdout is not None
        yield (await asyncio.wait_for(process.stdout.readline(), 30)).decode()
    finally:
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), 30)
