"""Issue 19, items 2 and 3: exports work on the first try; read-only commands never create a
database (the real command, in a subprocess)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from koalabot.store.database import Database
from tests.cli.first_hour import clean_env, koalabot, one_error_line
from tests.helpers_data import Seed


async def _seed(db: Database) -> None:
    thread = await Seed(db).thread()
    await thread.ask("What is a koala?", author="U0AUTHOR1")
    liked = await thread.answer("A marsupial.")
    await thread.vote(liked, "U0VOTER01", 1)


def _authors(path: Path) -> list[str]:
    return [json.loads(line)["meta"]["authors"][0] for line in path.read_text().splitlines()]


async def test_export_without_a_secret_keeps_one_with_the_database(
    db: Database, tmp_path: Path
) -> None:
    await _seed(db)
    export = ("export", "--format", "kto", "--database-url", db.url, "--out")

    first = koalabot(tmp_path, *export, "a.jsonl")
    second = koalabot(tmp_path, *export, "b.jsonl")
    overridden = koalabot(
        tmp_path, *export, "c.jsonl", env=clean_env(KOALABOT_PSEUDONYM_SECRET="s3cret")
    )

    assert first.returncode == 0, first.stderr
    assert "made a new pseudonym secret and kept it in the database" in first.stderr
    assert "table settings" in first.stderr and "KOALABOT_PSEUDONYM_SECRET" in first.stderr
    assert second.returncode == 0, second.stderr
    assert "pseudonyms use the secret kept in the database" in second.stderr
    [pseudonym] = _authors(tmp_path / "a.jsonl")
    assert "U0AUTHOR1" not in pseudonym
    assert _authors(tmp_path / "b.jsonl") == [pseudonym]  # the same across exports
    assert overridden.returncode == 0, overridden.stderr
    assert "kept in the database" not in overridden.stderr
    assert _authors(tmp_path / "c.jsonl") != [pseudonym]  # the variable wins


def test_readme_and_error_agree_on_the_secret_length() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert "token_hex(16)" not in readme


READ_ONLY = [
    ("stats",),
    ("export", "--format", "kto", "--out", "rows.jsonl"),
    ("review",),
    ("forget", "--user", "slack:U1"),
    ("db", "current"),
]


@pytest.mark.parametrize("command", READ_ONLY, ids=lambda c: c[0])
@pytest.mark.parametrize("url", ["sqlite:///missing.db", "missing.db"])
def test_read_only_commands_never_create_a_database(
    command: tuple[str, ...], url: str, tmp_path: Path
) -> None:
    done = koalabot(tmp_path, *command, "--database-url", url)

    err = one_error_line(done)
    assert "no database at missing.db" in err
    assert "--database-url" in err
    assert list(tmp_path.iterdir()) == []


def test_a_bare_path_is_a_sqlite_file(tmp_path: Path) -> None:
    created = koalabot(tmp_path, "db", "upgrade", "--database-url", "kb.db")
    assert created.returncode == 0, created.stderr
    assert (tmp_path / "kb.db").is_file()

    done = koalabot(tmp_path, "stats", "--database-url", "kb.db")

    assert done.returncode == 0, done.stderr
