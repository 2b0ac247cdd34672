"""Alembic environment for koalabot.

koalabot passes its own connection in ``config.attributes["connection"]`` (see
koalabot/store/database.py). Run from the `alembic` command line instead, this opens an async
engine itself, on the URL given as ``-x url=...``, else ``sqlalchemy.url``, else koalabot's own
settings (KOALABOT_DATABASE_URL, default sqlite:///koalabot.db).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Collection, Mapping
from logging.config import fileConfig
from typing import Any

from alembic import context
from alembic.runtime.migration import MigrationContext, MigrationInfo
from sqlalchemy import Connection, pool
from sqlalchemy.ext.asyncio import async_engine_from_config

from koalabot.store.database import async_url
from koalabot.store.models import Base

log = logging.getLogger("koalabot.migrations")

config = context.config
target_metadata = Base.metadata
_started = time.monotonic()


def _log_step(
    ctx: MigrationContext,
    step: MigrationInfo,
    heads: Collection[Any],
    run_args: Mapping[str, Any],
) -> None:
    """Progress: one INFO line per revision applied or reverted, with how long it took."""
    global _started
    now = time.monotonic()
    title = str(getattr(step.up_revision, "doc", "") or "").strip()
    verb = "applied" if step.is_upgrade else "reverted"
    log.info("%s migration %s (%s) in %.2f s", verb, step.up_revision_id, title, now - _started)
    _started = now


def _configure(**kwargs: Any) -> None:
    context.configure(
        target_metadata=target_metadata,
        compare_type=True,
        on_version_apply=_log_step,
        **kwargs,
    )


def _url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option(
        "sqlalchemy.url"
    )
    if not url:
        from koalabot.config import load_settings  # only the command line needs the settings

        url = load_settings().database_url
    return async_url(url)


def run_migrations_offline() -> None:
    """`alembic upgrade --sql`: print the SQL instead of running it."""
    url = _url()
    _configure(
        url=url,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        render_as_batch=url.startswith("sqlite"),
    )
    _run()


def _run() -> None:
    global _started
    _started = time.monotonic()
    with context.begin_transaction():
        context.run_migrations()


def do_run_migrations(connection: Connection) -> None:
    """Run the migrations on a synchronous (greenlet-adapted) connection."""
    _configure(connection=connection, render_as_batch=connection.dialect.name == "sqlite")
    _run()


async def run_async_migrations() -> None:
    """Open an engine of our own (the `alembic` command line) and migrate on it."""
    section = config.get_section(config.config_ini_section, {})
    section["sqlalchemy.url"] = _url()
    engine = async_engine_from_config(section, prefix="sqlalchemy.", poolclass=pool.NullPool)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(do_run_migrations)
    finally:
        await engine.dispose()


def run_migrations_online() -> None:
    """Migrate on koalabot's connection if given one, else on a fresh engine."""
    connection = config.attributes.get("connection")
    if connection is None:
        asyncio.run(run_async_migrations())
    else:
        do_run_migrations(connection)


if config.config_file_name is not None and config.file_config.has_section("loggers"):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
