"""Headless Chromium from the system (Debian's `chromium` package), driven by Playwright.

Playwright never downloads a browser here: it launches /usr/bin/chromium (or the path in
KOALABOT_CHROMIUM). Without it the browser tests skip with the reason, except in CI
(KOALABOT_REQUIRE_BROWSER=1), where they fail.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, async_playwright

CHROMIUM = Path(os.environ.get("KOALABOT_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: Screenshots taken by the tests (a CI artefact; gitignored).
OUTPUT = Path(__file__).resolve().parents[1] / "output"


def _unavailable(reason: str) -> None:
    if os.environ.get("KOALABOT_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{reason} (KOALABOT_REQUIRE_BROWSER=1)")
    pytest.skip(reason)


@pytest.fixture
def chromium() -> Path:
    """The system's Chromium (skips, or fails in CI, without it)."""
    if not CHROMIUM.exists():
        _unavailable(f"no Chromium at {CHROMIUM}: install it with `apt-get install -y chromium`")
    return CHROMIUM


@pytest.fixture
async def browser(chromium: Path) -> AsyncIterator[Browser]:
    """A headless Chromium, closed after the test."""
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=str(chromium), args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            await launched.close()
