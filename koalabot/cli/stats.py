"""`koalabot stats`: counts by platform, channel, model and day, approval rates, a chart."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from koalabot.cli.export import day_end, day_start
from koalabot.cli.options import add_common, existing_store_settings
from koalabot.errors import ConfigError
from koalabot.stats.models import (
    format_models,
    gather_models,
    models_json,
    plot_models,
)
from koalabot.stats.usage import format_report, gather, plot, report_json
from koalabot.store.database import open_database

T = TypeVar("T")


def register(subparsers: Any) -> None:
    """Add `stats` to the command tree."""
    parser = subparsers.add_parser(
        "stats",
        help="usage and approval by platform, channel, model and day",
        description="Count user messages, answers and votes by platform, channel, model and "
        "day (UTC), with the approval rate (liked answers / voted answers). Every vote counts "
        "here, opted-out users' too; `koalabot export` leaves those out.",
    )
    parser.add_argument("--since", type=day_start, metavar="DATE", help="from this day (UTC)")
    parser.add_argument("--until", type=day_end, metavar="DATE", help="up to this day, inclusive")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.add_argument(
        "--format", choices=("text", "json"), default="text", help="tables or JSON (as --json)"
    )
    parser.add_argument(
        "--plot",
        metavar="FILE.png",
        help="also draw approval rate and volume per day and model (with --models: approval "
        "per model with 95%% bands and the pairwise win matrix; needs koalabot[plot])",
    )
    parser.add_argument(
        "--models",
        action="store_true",
        help="compare the models: approval with 95%% intervals, battles, Bradley–Terry "
        "ratings and a verdict per pair",
    )
    parser.add_argument("--model", metavar="NAME", help="only answers of this model")
    add_common(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Print the report (with --models: the comparison); draw the chart if asked."""
    url = existing_store_settings(args).database_url
    if args.plot and not Path(args.plot).resolve().parent.is_dir():
        raise ConfigError(
            f"--plot {args.plot}: the folder {Path(args.plot).parent} does not exist; create it "
            "or write the chart elsewhere"
        )
    if args.models:
        models = asyncio.run(_read(url, args, gather_models))
        _show(
            args, models_json(models), format_models(models), lambda: plot_models(models, args.plot)
        )
    else:
        report = asyncio.run(_read(url, args, gather))
        _show(args, report_json(report), format_report(report), lambda: plot(report, args.plot))
    return 0


def _show(args: argparse.Namespace, data: Any, tables: str, draw: Callable[[], None]) -> None:
    if args.json or args.format == "json":
        json.dump(data, sys.stdout, indent=2, ensure_ascii=False)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(tables)
    if args.plot:
        draw()
        print(f"chart written to {args.plot}", file=sys.stderr)


async def _read(url: str, args: argparse.Namespace, read: Callable[..., Awaitable[T]]) -> T:
    db = await open_database(url)
    try:
        return await read(db, args.since, args.until, args.model)
    finally:
        await db.close()
