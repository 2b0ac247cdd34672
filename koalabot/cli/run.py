"""`koalabot run --platform slack,discord`: connect the adapters and answer until stopped."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import signal
from typing import TYPE_CHECKING, Any

from aiohttp import web

from koalabot.adapter import Adapter, AdapterFactory, RunOptions, load_factory
from koalabot.cli.logs import setup_logging
from koalabot.cli.options import add_backend, add_common, settings_from
from koalabot.config import Settings
from koalabot.errors import ConfigError

if TYPE_CHECKING:
    from koalabot.engine.engine import Engine

log = logging.getLogger(__name__)


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser("run", help="run the bot on Slack/Discord")
    add_common(parser)
    add_backend(parser)
    parser.add_argument("--platform", required=True, help="slack, discord, or both: slack,discord")
    parser.add_argument("--mode", choices=("socket", "http"), default="socket", help="Slack mode")
    parser.add_argument("--port", type=int, help="HTTP port (Slack events)")
    parser.add_argument("--shard-id", dest="shard_id", type=int)
    parser.add_argument("--shard-count", dest="shard_count", type=int)
    parser.add_argument("--log-level", dest="log_level", type=str.upper)
    parser.add_argument("--log-format", dest="log_format", choices=("text", "json"))
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    platforms = [p.strip() for p in args.platform.split(",") if p.strip()]
    if not platforms:
        raise ConfigError("--platform is empty (use slack, discord, or slack,discord)")
    factories = {name: load_factory(name) for name in platforms}  # unknown names fail here
    settings = settings_from(args)
    setup_logging(settings.log_level, settings.log_format)
    options = RunOptions(
        mode=args.mode,
        port=args.port if args.port is not None else settings.port,
        shard_id=args.shard_id,
        shard_count=args.shard_count,
    )
    asyncio.run(serve(settings, factories, options))
    return 0


async def serve(
    settings: Settings, factories: dict[str, AdapterFactory], options: RunOptions
) -> None:
    """Start every adapter over one engine and the HTTP port; on SIGTERM or SIGINT stop taking
    messages, let answers in flight finish within the grace period, then disconnect."""
    from koalabot.engine.engine import Engine  # heavy (SQLAlchemy, aiohttp); only when running
    from koalabot.http import ops_app

    engine = await Engine.open(settings)
    options = dataclasses.replace(options, web_app=ops_app(engine))
    assert options.web_app is not None
    adapters: list[Adapter] = []
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    runner = web.AppRunner(options.web_app, access_log=None)
    try:
        for name, factory in factories.items():
            adapter = factory(engine, settings, options)
            await adapter.start()
            adapters.append(adapter)
            log.info("%s adapter running", name)
        await runner.setup()
        await _bind(web.TCPSite(runner, settings.host, options.port))
        host, port = runner.addresses[0][:2]  # the port chosen when asked for port 0
        log.info("HTTP on %s:%s (/healthz, /metrics)", host, port)
        for adapter in adapters:
            await _platform_connected(engine, adapter)
        await stop.wait()
        log.info("stopping: finishing answers in flight (up to %.0f s)", settings.shutdown_grace)
        interrupted = await engine.shutdown(settings.shutdown_grace)
        if interrupted:
            log.warning("%d answers interrupted by the shutdown", interrupted)
    finally:
        for adapter in reversed(adapters):
            with contextlib.suppress(Exception):
                await adapter.stop()
        await runner.cleanup()
        await engine.close()


async def _bind(site: web.TCPSite) -> None:
    """Listen on the HTTP port, or one line saying who holds it and how to move it."""
    try:
        await site.start()
    except OSError as exc:
        raise ConfigError(
            f"cannot listen on {site.name} ({exc.strerror or exc}): koalabot run serves "
            "/healthz and /metrics there (and Slack events in HTTP mode), in Socket Mode too; "
            "stop what holds the port, or move it with --port N or KOALABOT_PORT=N "
            "(0: any free port)"
        ) from None


async def _platform_connected(engine: Engine, adapter: Adapter) -> None:
    """Answers a crash cut off become a notice where they stood, and messages kept in the
    spool while the database was down get answered (through the adapter's ``sink_for``)."""
    sink_for = adapter.sink_for
    if told := await engine.tell_interrupted(adapter.name, sink_for):
        log.info("%d interrupted answers on %s now say so", told, adapter.name)
    engine.platform_connected(adapter.name, sink_for)
