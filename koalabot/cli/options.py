"""Options shared by subcommands, and how they become Settings (command line wins)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from koalabot.config import Settings, load_settings
from koalabot.errors import ConfigError, StoreError


def add_common(parser: argparse.ArgumentParser) -> None:
    """--config and --database-url: every command that reads settings or the store has them."""
    parser.add_argument(
        "--config",
        metavar="FILE.toml",
        help="read settings from a TOML file (default: KOALABOT_CONFIG, else ./koalabot.toml "
        "if there is one)",
    )
    parser.add_argument(
        "--database-url", dest="database_url", help="SQLAlchemy URL (default sqlite:///koalabot.db)"
    )


def add_backend(parser: argparse.ArgumentParser) -> None:
    """Options naming the model server and the prompt template."""
    parser.add_argument("--tgi-url", dest="tgi_url", help="TGI base URL (KOALABOT_TGI_URL)")
    parser.add_argument("--template", help="prompt template: koala (default) or koala-fastchat")
    parser.add_argument("--max-new-tokens", dest="max_new_tokens", type=int)
    parser.add_argument("--temperature", type=float)
    parser.add_argument("--top-p", dest="top_p", type=float)


_SETTING_OPTIONS = (
    "database_url",
    "tgi_url",
    "template",
    "max_new_tokens",
    "temperature",
    "top_p",
    "port",
    "log_level",
    "log_format",
)


#: The config file read when neither --config nor KOALABOT_CONFIG names one, if it exists.
DEFAULT_CONFIG = "koalabot.toml"


def config_file(given: str | None) -> str | None:
    """--config, else KOALABOT_CONFIG, else ./koalabot.toml when there is one."""
    if given is not None:
        return given
    if from_env := os.environ.get("KOALABOT_CONFIG"):
        if not Path(from_env).is_file():
            raise ConfigError(f"KOALABOT_CONFIG names {from_env}, which does not exist")
        return from_env
    return DEFAULT_CONFIG if Path(DEFAULT_CONFIG).is_file() else None


def settings_from(args: argparse.Namespace, **extra: Any) -> Settings:
    """Settings with the command line's values (those given) on top of env, file and defaults."""
    given = {name: getattr(args, name, None) for name in _SETTING_OPTIONS}
    given.update(extra)
    settings = load_settings(config_file(getattr(args, "config", None)), **given)
    if given["database_url"] is not None:
        _check_flag_url(settings.database_url)
    return settings


def _check_flag_url(url: str) -> None:
    """A bad --database-url is named by its flag (the store's error names the variable)."""
    from koalabot.store.database import async_url  # SQLAlchemy: only when a URL is given

    try:
        async_url(url)
    except ConfigError as exc:
        raise ConfigError(f"--database-url: {exc}") from None


def existing_store_settings(args: argparse.Namespace) -> Settings:
    """Settings for a command that only reads (or prunes) the store, which must exist."""
    settings = settings_from(args)
    require_existing_store(settings.database_url)
    return settings


def require_existing_store(url: str) -> None:
    """A SQLite file that does not exist is an error naming it, never a new empty database."""
    from koalabot.store.database import missing_sqlite_file  # SQLAlchemy: only when needed

    missing = missing_sqlite_file(url)
    if missing is not None:
        raise StoreError(
            f"no database at {missing}: check --database-url (or KOALABOT_DATABASE_URL); "
            "`koalabot chat` or `koalabot run` creates one"
        )
