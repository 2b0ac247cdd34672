"""`koalabot` command line: one module per subcommand, errors turned into one line here."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from importlib import metadata

from koalabot.errors import KoalabotError
from koalabot.logsafe import install, mask_urls

# Each module defines register(subparsers) and sets a `handler(args) -> int` default.
COMMANDS = ("run", "chat", "prompt", "db", "export", "stats", "forget", "review")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The command tree (also used by the docs and the tests).

    With ``only``, just that command's module is imported (the others get a bare entry):
    command modules pull in SQLAlchemy, aiohttp and the platform SDKs, which take seconds.
    """
    parser = argparse.ArgumentParser(
        prog="koalabot",
        description="A self-hosted Koala chat model in Slack and Discord, and its training data.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        if only is None or name == only:
            module = importlib.import_module(f"koalabot.cli.{name}")
            module.register(sub)
        else:
            sub.add_parser(name)
    return parser


def _version() -> str:
    try:
        return metadata.version("koalabot")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "(not installed)"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command if command in COMMANDS else None)
    args = parser.parse_args(argv)
    install(logging.lastResort)  # warnings of commands that set up no logging, masked too
    try:
        code: int = args.handler(args)
    except KoalabotError as exc:
        print(f"koalabot: error: {mask_urls(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
