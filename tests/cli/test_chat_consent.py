"""`koalabot chat`: /optout and /optin, and a consent notice that names them (issue 16, item 7)."""

from __future__ import annotations

from pathlib import Path

from koalabot.engine.notices import OPTED_IN, OPTED_OUT
from tests.cli.test_chat import run_chat
from tests.export.consent import exported
from tests.fakes.tgi import FakeTGI


async def test_optout_and_optin_in_the_terminal(tmp_path: Path, fake_tgi: FakeTGI) -> None:
    fake_tgi.replies.append(" Hello there.")
    code, out, err = await run_chat(tmp_path, fake_tgi.url, "hi my-secret-words\n/good\n/optout\n")
    assert code == 0, err
    assert "type /optout (and /optin to opt back in)" in out
    assert f"[{OPTED_OUT}]" in out.splitlines()
    url = f"sqlite:///{tmp_path / 'chat.db'}"
    assert "my-secret-words" not in await exported(url)

    code, out, err = await run_chat(tmp_path, fake_tgi.url, "/optin\n")
    assert code == 0, err
    assert out.splitlines() == [f"[{OPTED_IN}]"]
    assert "my-secret-words" in await exported(url)
