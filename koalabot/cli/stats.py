"""`koalabot stats`: counts by platform, channel, model and day, approval rates, a chart."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from koalabot.cli.export import day_end, day_start
from koalabot.cli.options import add_common, existing_store_settings
from koalabot.errors import ConfigError
from koalabot.stats.usage import Report, format_report, gather, plot, report_json
from koalabot.store.database import open_database


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
        "--plot",
        metavar="FILE.png",
        help="also draw approval rate and volume per day and model (needs koalabot[plot])",
    )
    add_common(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Print the report; draw the chart if asked."""
    settings = existing_store_settings(args)
    if args.plot and not Path(args.plot).resolve().parent.is_dir():
        raise ConfigError(
            f"--plot {args.plot}: the folder {Path(args.plot).parent} does not exist; create it "
            "or write the chart elsewhere"
        )
    report = asyncio.run(_gather(settings.database_url, args))
    if args.json:
        json.dump(report_json(report), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(format_report(report))
    if args.plot:
        plot(report, args.plot)
        print(f"chart written to {args.plot}", file=sys.stderr)
    return 0


async def _gather(url: str, args: argparse.Namespace) -> Report:
    db = await open_database(url)
    try:
        return await gather(db, args.since, args.until)
    finally:
        await db.close()
