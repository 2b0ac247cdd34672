"""Migrations, tested by the exact schema they build, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import io
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, inspect
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from koalabot.cli import main
from koalabot.errors import MigrationError
from koalabot.store.database import (
    SCHEMA_HEAD,
    async_url,
    current_revision,
    downgrade,
    head_revision,
    upgrade,
)
from koalabot.store.models import Base

T = TypeVar("T")

HEAD = "0008_thread_parents"
SIDES = "0007_battle_sides"
MODELS = "0006_answer_models"
IDS = "0005_ids_never_reused"
MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"

COLUMNS = {
    "alembic_version": ["version_num"],
    "conversations": ["id", "platform", "workspace", "channel", "thread", "created_at", "parent"],
    "feedback": ["id", "message_id", "user", "rating", "reason", "created_at", "updated_at"],
    "generations": [
        "id",
        "message_id",
        "prompt",
        "template",
        "parameters",
        "model_id",
        "endpoint",
        "prompt_tokens",
        "completion_tokens",
        "finish_reason",
        "time_to_first_token",
        "total_time",
        "dropped_turns",
        "error",
        "created_at",
    ],
    "message_refs": ["id", "message_id", "platform", "channel", "platform_message_id"],
    "messages": [
        "id",
        "conversation_id",
        "role",
        "author",
        "text",
        "platform_message_id",
        "status",
        "parent_id",
        "created_at",
        "model",
        "side",
    ],
    "judgements": ["id", "a_id", "b_id", "user", "choice", "created_at", "updated_at"],
    "optouts": ["user_key", "created_at"],
    "processed_events": ["key", "message_id", "created_at"],
    "settings": ["key", "value", "created_at"],
    "reviews": [
        "id",
        "message_id",
        "decision",
        "reason",
        "correction",
        "reviewer",
        "decided_at",
    ],
}

PRIMARY_KEYS = {
    "alembic_version": ("alembic_version_pkc", ("version_num",)),
    "conversations": ("pk_conversations", ("id",)),
    "feedback": ("pk_feedback", ("id",)),
    "generations": ("pk_generations", ("id",)),
    "judgements": ("pk_judgements", ("id",)),
    "message_refs": ("pk_message_refs", ("id",)),
    "messages": ("pk_messages", ("id",)),
    "optouts": ("pk_optouts", ("user_key",)),
    "processed_events": ("pk_processed_events", ("key",)),
    "reviews": ("pk_reviews", ("id",)),
    "settings": ("pk_settings", ("key",)),
}

UNIQUES = {
    ("conversations", "uq_conversations_key", ("platform", "workspace", "channel", "thread")),
    ("feedback", "uq_feedback_message_user", ("message_id", "user")),
    ("generations", "uq_generations_message_id", ("message_id",)),
    ("judgements", "uq_judgements_pair_user", ("a_id", "b_id", "user")),
    ("message_refs", "uq_message_refs_key", ("platform", "channel", "platform_message_id")),
    ("reviews", "uq_reviews_message_id", ("message_id",)),
}

_CASCADE = {"ondelete": "CASCADE"}
FOREIGN_KEYS = {
    ("feedback", "fk_feedback_message_id_messages", ("message_id",), "messages", ("id",)),
    ("generations", "fk_generations_message_id_messages", ("message_id",), "messages", ("id",)),
    ("message_refs", "fk_message_refs_message_id_messages", ("message_id",), "messages", ("id",)),
    ("judgements", "fk_judgements_a_id_messages", ("a_id",), "messages", ("id",)),
    ("judgements", "fk_judgements_b_id_messages", ("b_id",), "messages", ("id",)),
    (
        "messages",
        "fk_messages_conversation_id_conversations",
        ("conversation_id",),
        "conversations",
        ("id",),
    ),
    ("messages", "fk_messages_parent_id_messages", ("parent_id",), "messages", ("id",)),
    (
        "processed_events",
        "fk_processed_events_message_id_messages",
        ("message_id",),
        "messages",
        ("id",),
    ),
    ("reviews", "fk_reviews_message_id_messages", ("message_id",), "messages", ("id",)),
}

#: Tables whose integer ids SQLite gives out once only (AUTOINCREMENT).
ID_TABLES = (
    "conversations",
    "feedback",
    "generations",
    "judgements",
    "message_refs",
    "messages",
    "reviews",
)


def _primary_keys(url: str) -> dict[str, tuple[str | None, tuple[str, ...]]]:
    """SQLite writes AUTOINCREMENT only on an unnamed column key: those keys have no name."""
    if not url.startswith("sqlite"):
        return PRIMARY_KEYS
    return {t: (None, pk[1]) if t in ID_TABLES else pk for t, pk in PRIMARY_KEYS.items()}


INDEXES = {  # (table, name, columns, unique)
    ("message_refs", "ix_message_refs_message_id", ("message_id",), False),
    ("feedback", "ix_feedback_message_id_rating", ("message_id", "rating"), False),
    ("messages", "ix_messages_author", ("author",), False),
    ("messages", "ix_messages_model", ("model",), False),
    ("judgements", "ix_judgements_b_id", ("b_id",), False),
    ("processed_events", "ix_processed_events_message_id", ("message_id",), False),
    ("messages", "ix_messages_conversation_id_id", ("conversation_id", "id"), False),
    ("messages", "ix_messages_parent_id", ("parent_id",), False),
}


def _schema(conn: Connection) -> dict[str, Any]:
    """What a DBA would see: tables, columns in order, and every key, constraint and index."""
    insp = inspect(conn)
    tables = sorted(insp.get_table_names())
    fks = set()
    for t in tables:
        for fk in insp.get_foreign_keys(t):
            assert fk["options"] == _CASCADE, (t, fk)
            columns, referred = tuple(fk["constrained_columns"]), tuple(fk["referred_columns"])
            fks.add((t, fk["name"], columns, fk["referred_table"], referred))
    return {
        "tables": tables,
        "columns": {t: [c["name"] for c in insp.get_columns(t)] for t in tables},
        "primary_keys": {
            t: (pk["name"], tuple(pk["constrained_columns"]))
            for t in tables
            for pk in [insp.get_pk_constraint(t)]
        },
        "uniques": {
            (t, u["name"], tuple(u["column_names"]))
            for t in tables
            for u in insp.get_unique_constraints(t)
        },
        "foreign_keys": fks,
        # PostgreSQL lists each unique constraint's index too; those are checked as uniques.
        "indexes": {
            (t, ix["name"], tuple(ix["column_names"]), bool(ix["unique"]))
            for t in tables
            for ix in insp.get_indexes(t)
            if "duplicates_constraint" not in ix
        },
    }


async def _on(url: str, fn: Callable[[Connection], T]) -> T:
    """Run `fn` on a plain engine of the test's own (not koalabot's)."""
    engine = create_async_engine(async_url(url), poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(fn)
    finally:
        await engine.dispose()


def _model_diffs(conn: Connection) -> list[Any]:
    context = MigrationContext.configure(conn, opts={"compare_type": True})
    return list(compare_metadata(context, Base.metadata))


def test_the_head_koalabot_opens_without_alembic_is_the_newest_migration() -> None:
    # A database at SCHEMA_HEAD skips Alembic when it opens: a new migration must move it too.
    assert head_revision() == SCHEMA_HEAD


def test_opening_a_current_store_does_not_load_alembic(sqlite_url: str) -> None:
    asyncio.run(upgrade(sqlite_url))
    script = (
        "import asyncio, sys\n"
        "from koalabot.store.database import open_database\n"
        f"db = asyncio.run(open_database({sqlite_url!r}))\n"
        "print('alembic' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


async def test_upgrade_from_empty_builds_exactly_the_schema(database_url: str) -> None:
    await upgrade(database_url)

    schema = await _on(database_url, _schema)

    assert schema["tables"] == sorted(COLUMNS)
    assert schema["columns"] == COLUMNS
    assert schema["primary_keys"] == _primary_keys(database_url)
    assert schema["uniques"] == UNIQUES
    assert schema["foreign_keys"] == FOREIGN_KEYS
    assert schema["indexes"] == INDEXES
    assert await current_revision(database_url) == head_revision() == HEAD


async def test_migrated_schema_matches_the_models(database_url: str) -> None:
    await upgrade(database_url)

    assert await _on(database_url, _model_diffs) == []


async def test_downgrade_to_base_removes_every_table_and_upgrade_restores_them(
    database_url: str,
) -> None:
    await upgrade(database_url)
    before = await _on(database_url, _schema)

    await downgrade(database_url, "base")
    assert (await _on(database_url, _schema))["tables"] == ["alembic_version"]
    assert await current_revision(database_url) is None

    await upgrade(database_url)
    assert await _on(database_url, _schema) == before
    assert await current_revision(database_url) == head_revision()


async def test_downgrade_to_an_unknown_revision_is_a_clear_error(database_url: str) -> None:
    await upgrade(database_url)

    with pytest.raises(MigrationError, match="cannot downgrade to 'nonsense'"):
        await downgrade(database_url, "nonsense")
    assert await current_revision(database_url) == head_revision()


def test_alembic_command_line_uses_the_same_env(sqlite_url: str, tmp_path: Path) -> None:
    """`alembic -c migrations/alembic.ini` works from any directory (env.py opens its engine)."""
    ini = str(MIGRATIONS / "alembic.ini")
    command = [
        sys.executable,
        "-m",
        "alembic",
        "-c",
        ini,
        "-x",
        f"url={sqlite_url}",
        "upgrade",
        "head",
    ]

    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=60)

    assert done.returncode == 0, done.stderr
    assert "Running upgrade  -> 0001, initial schema" in done.stderr
    assert "Running upgrade 0001 -> 0002, review decisions" in done.stderr
    assert "Running upgrade 0002 -> 0003, feedback indexed by answer and rating" in done.stderr
    assert "Running upgrade 0003 -> 0004, settings kept with the database" in done.stderr
    assert f"Running upgrade 0004 -> {IDS}, row ids never reused on SQLite" in done.stderr
    assert f"Running upgrade {IDS} -> {MODELS}, which model answered" in done.stderr
    assert f"Running upgrade {MODELS} -> {SIDES}, which side of a battle" in done.stderr
    assert f"Running upgrade {SIDES} -> {HEAD}, the channel a thread was" in done.stderr
    assert asyncio.run(current_revision(sqlite_url)) == head_revision()


# --- `koalabot db`, through the real command line entry -----------------------------------


def test_koalabot_db_upgrade_and_current(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    shown = database_url  # no password in the test URLs, so it is printed as given
    if database_url.startswith("sqlite:///"):
        Path(database_url.removeprefix("sqlite:///")).touch()  # an empty file: an empty database

    assert main(["db", "current", "--database-url", database_url]) == 0
    assert capsys.readouterr().out == f"(none) (head is {HEAD}: run `koalabot db upgrade`)\n"

    assert main(["db", "upgrade", "--database-url", database_url]) == 0
    out = capsys.readouterr().out
    assert "applied migration 0001 (initial schema)" in out
    assert "applied migration 0002 (review decisions)" in out
    assert "applied migration 0003 (feedback indexed by answer and rating)" in out
    assert "applied migration 0004 (settings kept with the database)" in out
    assert f"applied migration {IDS} (row ids never reused on SQLite)" in out
    assert f"applied migration {MODELS} (which model answered, and battle judgements)" in out
    assert f"applied migration {SIDES} (which side of a battle an answer was)" in out
    assert f"applied migration {HEAD} (the channel a thread was opened from)" in out
    assert out.endswith(f"{shown} upgraded from (none) to {HEAD} (head).\n")

    assert main(["db", "upgrade", "--database-url", database_url]) == 0
    assert capsys.readouterr().out == f"{shown} is already at {HEAD} (head); nothing to do.\n"

    assert main(["db", "current", "--database-url", database_url]) == 0
    assert capsys.readouterr().out == f"{HEAD} (head)\n"

    assert main(["db", "downgrade", "base", "--yes", "--database-url", database_url]) == 0
    out = capsys.readouterr().out
    assert f"reverted migration {HEAD} (the channel a thread was opened from)" in out
    assert f"reverted migration {SIDES} (which side of a battle an answer was)" in out
    assert f"reverted migration {MODELS} (which model answered, and battle judgements)" in out
    assert f"reverted migration {IDS} (row ids never reused on SQLite)" in out
    assert "reverted migration 0004 (settings kept with the database)" in out
    assert "reverted migration 0003 (feedback indexed by answer and rating)" in out
    assert "reverted migration 0002 (review decisions)" in out
    assert "reverted migration 0001 (initial schema)" in out
    assert out.endswith(f"{shown} downgraded from {HEAD} (head) to (none).\n")


class _Terminal(io.StringIO):
    """What a person types at a terminal."""

    def isatty(self) -> bool:
        return True


def test_koalabot_db_downgrade_deletes_nothing_unless_confirmed(
    database_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert main(["db", "upgrade", "--database-url", database_url]) == 0
    capsys.readouterr()
    downgrade_base = ["db", "downgrade", "base", "--database-url", database_url]

    monkeypatch.setattr("sys.stdin", io.StringIO("yes\n"))  # a script: no terminal to ask on
    assert main(downgrade_base) == 2
    err = capsys.readouterr().err
    assert "drops every koalabot table" in err and "pass --yes" in err
    assert asyncio.run(current_revision(database_url)) == head_revision()

    monkeypatch.setattr("sys.stdin", _Terminal("y\n"))  # anything but "yes" keeps the data
    assert main(downgrade_base) == 2
    captured = capsys.readouterr()
    assert "Warning: downgrading" in captured.out
    assert "not confirmed; nothing was changed" in captured.err
    assert asyncio.run(current_revision(database_url)) == head_revision()

    monkeypatch.setattr("sys.stdin", _Terminal("yes\n"))
    assert main(downgrade_base) == 0
    assert capsys.readouterr().out.endswith(f"downgraded from {HEAD} (head) to (none).\n")
    assert asyncio.run(current_revision(database_url)) is None

    monkeypatch.setattr("sys.stdin", io.StringIO(""))  # nothing left to delete: nothing to ask
    assert main(downgrade_base) == 0
    assert "already at (none)" in capsys.readouterr().out


def test_koalabot_db_current_does_not_create_a_missing_sqlite_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "typo.db"

    assert main(["db", "current", "--database-url", f"sqlite:///{path}"]) == 2

    assert capsys.readouterr().err.startswith(f"koalabot: error: no database at {path}")
    assert not path.exists()


def test_koalabot_db_reads_the_url_from_the_environment(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KOALABOT_DATABASE_URL", sqlite_url)

    assert main(["db", "upgrade"]) == 0

    out = capsys.readouterr().out
    assert out.endswith(f"{sqlite_url} upgraded from (none) to {HEAD} (head).\n")


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("not a url", "invalid KOALABOT_DATABASE_URL 'not a url'"),
        ("mysql://root@localhost/koala", "unsupported database 'mysql'"),
        ("postgresql+psycopg2://u:pw@localhost/x", "invalid KOALABOT_DATABASE_URL"),
    ],
)
def test_a_bad_database_url_is_one_line_not_a_traceback(
    url: str, says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["db", "upgrade", "--database-url", url]) == 2

    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("koalabot: error: ")
    assert says in err


def test_an_unreachable_server_is_one_line_and_hides_the_password(
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = "postgresql://kb:s3cret@127.0.0.1:1/koalabot"  # nothing listens on port 1

    assert main(["db", "current", "--database-url", url]) == 2

    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("koalabot: error: could not open the database at ")
    assert "postgresql://kb:***@127.0.0.1:1/koalabot" in err
    assert "s3cret" not in err


def test_console_script_runs_db_current(sqlite_url: str) -> None:
    Path(sqlite_url.removeprefix("sqlite:///")).touch()  # an empty file: an empty database
    done = subprocess.run(
        [sys.executable, "-m", "koalabot", "db", "current", "--database-url", sqlite_url],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout == f"(none) (head is {HEAD}: run `koalabot db upgrade`)\n"


# --- row ids are never given out twice --------------------------------------------------------


def _fill(conn: Connection) -> None:
    """Two threads with a vote, in a fresh store: ids 1 to 3."""
    conn.exec_driver_sql(
        "INSERT INTO conversations (platform, workspace, channel, thread, created_at)"
        " VALUES ('slack', 'T', 'C1', '1.0', '2026-01-01'), ('slack', 'T', 'C2', '2.0',"
        " '2026-01-01')"
    )
    conn.exec_driver_sql(
        "INSERT INTO messages (conversation_id, role, author, text, status, parent_id,"
        " created_at) VALUES (1, 'user', 'UALICE', 'alice secret', 'ok', NULL, '2026-01-01'),"
        " (1, 'assistant', NULL, 'an answer', 'ok', 1, '2026-01-01'),"
        " (2, 'user', 'UBOB', 'bob asks', 'ok', NULL, '2026-01-01')"
    )
    conn.exec_driver_sql(
        'INSERT INTO feedback (message_id, "user", rating, created_at, updated_at)'
        " VALUES (2, 'UBOB', 1, '2026-01-01', '2026-01-01')"
    )
    conn.commit()


def _forget_newest_then_add(conn: Connection) -> int:
    """Delete the newest message and store another: the id the new one gets."""
    conn.exec_driver_sql("DELETE FROM messages WHERE id = 3")
    conn.exec_driver_sql(
        "INSERT INTO messages (conversation_id, role, author, text, status, created_at)"
        " VALUES (1, 'user', 'UCAROL', 'carol asks', 'ok', '2026-01-02')"
    )
    new_id = int(conn.exec_driver_sql("SELECT max(id) FROM messages").scalar_one())
    conn.commit()
    return new_id


def _rows(conn: Connection) -> dict[str, list[Any]]:
    return {
        t: [tuple(r) for r in conn.exec_driver_sql(f"SELECT * FROM {t} ORDER BY 1").all()]
        for t in ("conversations", "messages", "feedback")
    }


async def test_upgrade_keeps_every_row_and_a_deleted_id_never_comes_back(
    database_url: str,
) -> None:
    await upgrade(database_url, "0004")
    await _on(database_url, _fill)
    before = await _on(database_url, _rows)

    await upgrade(database_url, IDS)

    assert await _on(database_url, _rows) == before
    assert await _on(database_url, _schema) == await _fresh_schema(database_url)
    assert await _on(database_url, _forget_newest_then_add) == 4


async def _fresh_schema(database_url: str) -> dict[str, Any]:
    """The schema an empty store upgraded straight to the head has (same server, new file)."""
    if not database_url.startswith("sqlite"):
        return await _on(database_url, _schema)  # PostgreSQL: the migration changes nothing
    fresh = database_url.replace(".db", "-fresh.db")
    await upgrade(fresh, IDS)
    return await _on(fresh, _schema)


def test_every_id_table_is_autoincrement_on_sqlite(sqlite_url: str) -> None:
    asyncio.run(upgrade(sqlite_url))

    def tables(conn: Connection) -> dict[str, bool]:
        found = conn.exec_driver_sql("SELECT name, sql FROM sqlite_master WHERE type = 'table'")
        with_ids = [(name, sql) for name, sql in found if "id" in COLUMNS.get(name, ())]
        return {name: "AUTOINCREMENT" in sql for name, sql in with_ids}

    assert asyncio.run(_on(sqlite_url, tables)) == dict.fromkeys(ID_TABLES, True)


async def test_downgrade_to_0004_gives_back_the_0004_schema_and_rows(database_url: str) -> None:
    await upgrade(database_url, "0004")
    await _on(database_url, _fill)
    before = await _on(database_url, _schema), await _on(database_url, _rows)
    await upgrade(database_url)

    await downgrade(database_url, "0004")

    assert (await _on(database_url, _schema), await _on(database_url, _rows)) == before


# --- battle sides ---------------------------------------------------------------------------


def _judged_battle(conn: Connection) -> None:
    """A question with two answers and a choice between them (as 0006 stored a battle), and a
    question answered twice without one (a 🔄: no battle)."""
    _fill(conn)
    conn.exec_driver_sql(
        "INSERT INTO messages (conversation_id, role, author, text, status, parent_id,"
        " created_at) VALUES (1, 'assistant', NULL, 'answer b', 'ok', 1, '2026-01-01'),"
        " (2, 'assistant', NULL, 'first', 'ok', 3, '2026-01-01'),"
        " (2, 'assistant', NULL, 'retried', 'ok', 3, '2026-01-01')"
    )
    conn.exec_driver_sql(
        'INSERT INTO judgements (a_id, b_id, "user", choice, created_at, updated_at)'
        " VALUES (2, 4, 'UBOB', 'b', '2026-01-01', '2026-01-01')"
    )
    conn.commit()


def _sides(conn: Connection) -> dict[str, str | None]:
    rows = conn.exec_driver_sql("SELECT text, side FROM messages WHERE role = 'assistant'")
    return dict(rows.all())


async def test_upgrade_marks_the_two_answers_of_each_judged_battle_a_and_b(
    database_url: str,
) -> None:
    await upgrade(database_url, MODELS)
    await _on(database_url, _judged_battle)

    await upgrade(database_url, SIDES)

    assert await _on(database_url, _sides) == {
        "an answer": "A",
        "answer b": "B",
        "first": None,
        "retried": None,
    }
