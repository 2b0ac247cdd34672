"""Issue 19, item 4: a person's mistake is one line naming the cause and the fix, never a
traceback (the real command, in a subprocess)."""

from __future__ import annotations

import asyncio
import resource
import shutil
import socket
import subprocess
import sys
from pathlib import Path

from koalabot.store.database import Database
from tests.cli.first_hour import clean_env, koalabot, one_error_line
from tests.fakes.slack import FakeSlack
from tests.fakes.tgi import FakeTGI
from tests.helpers_data import Seed
from tests.reliability.process import bot_env


async def test_run_on_a_port_in_use_says_which_setting_moves_it(
    fake_slack: FakeSlack, fake_tgi: FakeTGI, tmp_path: Path
) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        env = bot_env(f"sqlite:///{tmp_path / 'bot.db'}", fake_tgi, slack=fake_slack, port=port)
        env["SLACK_APP_TOKEN"] = fake_slack.app_token
        done = await asyncio.to_thread(
            koalabot, tmp_path, "run", "--platform", "slack", "--log-level", "error", env=env
        )

    err = one_error_line(done)
    assert f"cannot listen on http://127.0.0.1:{port}" in err
    assert "--port" in err and "KOALABOT_PORT" in err


def test_a_malformed_config_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text('max_new_tokens = 400\ntemplate = "koala\n')

    err = one_error_line(koalabot(tmp_path, "stats", "--config", "bad.toml"))

    assert "--config bad.toml: not valid TOML" in err and "line 2" in err


async def test_stats_plot_into_a_missing_folder_is_one_line(db: Database, tmp_path: Path) -> None:
    done = koalabot(tmp_path, "stats", "--database-url", db.url, "--plot", "charts/usage.png")

    err = one_error_line(done)
    assert "--plot charts/usage.png: the folder charts does not exist" in err


def test_a_bad_flag_value_names_the_flag(tmp_path: Path) -> None:
    temperature = one_error_line(koalabot(tmp_path, "prompt", "--temperature", "-1", "-"))
    url = one_error_line(koalabot(tmp_path, "stats", "--database-url", "mysql://db/kb"))

    assert "invalid --temperature (KOALABOT_TEMPERATURE): " in temperature
    assert url.startswith("koalabot: error: --database-url: ")


async def _seed_large(db: Database) -> None:
    seed = Seed(db)
    for n in range(40):
        thread = await seed.thread()
        await thread.ask(f"Question {n}: " + "why? " * 200, author="U0AUTHOR1")
        answer = await thread.answer("Because. " * 300)
        await thread.vote(answer, "U0VOTER01", 1)


def _export_on_a_small_disk(folder: Path, db: Database) -> subprocess.CompletedProcess[str]:
    """`koalabot export` into a 64 KiB tmpfs of its own mount namespace when the system lets us
    make one; else under a 64 KiB file-size limit (EFBIG instead of ENOSPC, the same path)."""
    export = [sys.executable, "-m", "koalabot", "export", "--format", "sft", "--no-pseudonymize"]
    export += ["--database-url", db.url, "--out", str(folder / "rows.jsonl")]
    unshare = shutil.which("unshare")
    if unshare and subprocess.run([unshare, "-rm", "true"], capture_output=True).returncode == 0:
        script = f'mount -t tmpfs -o size=64k tmpfs "$1" && shift && "$@"; c=$?; ls -A "{folder}"'
        command = [unshare, "-rm", "sh", "-c", script + "; exit $c", "sh", str(folder), *export]
        return subprocess.run(command, capture_output=True, text=True, env=clean_env())

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))

    done = subprocess.run(export, capture_output=True, text=True, env=clean_env(), preexec_fn=limit)
    done.stdout = "".join(f"{p.name}\n" for p in folder.iterdir())
    return done


async def test_a_disk_that_fills_during_export_is_one_line_and_leaves_no_file(
    db: Database, tmp_path: Path
) -> None:
    await _seed_large(db)
    folder = tmp_path / "small"
    folder.mkdir()

    done = await asyncio.to_thread(_export_on_a_small_disk, folder, db)

    err = one_error_line(done)
    assert "--out " in err and "while writing" in err
    assert done.stdout == ""  # the folder on the small disk is empty: no partial file
