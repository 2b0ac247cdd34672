"""Running the installed `koalabot` as a newcomer does: a subprocess with no ambient settings."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without any KOALABOT_* setting, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KOALABOT_")}
    return {**env, **extra}


def koalabot(
    cwd: Path,
    *argv: str,
    env: dict[str, str] | None = None,
    timeout: float = 60,
    stdin: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """`python -m koalabot ARGV` in ``cwd``, with ``stdin`` piped in."""
    return subprocess.run(
        [sys.executable, "-m", "koalabot", *argv],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env if env is not None else clean_env(),
        timeout=timeout,
    )


def one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    """The single `koalabot: error: ...` line of a failed run (asserting there is nothing else)."""
    assert done.returncode != 0, done.stdout
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("koalabot: error: "), done.stderr
    assert "Traceback" not in done.stderr
    return done.stderr
