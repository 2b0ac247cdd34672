"""What a platform adapter module offers `koalabot run`: a factory and a start/stop pair.

Each module in koalabot_adapters (slack, discord, terminal) defines
``create_adapter(engine, settings, options) -> Adapter``; the core imports it by name only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from aiohttp import web

if TYPE_CHECKING:
    from koalabot.config import Settings
    from koalabot.engine.engine import Engine


@dataclass(frozen=True)
class RunOptions:
    """Command-line choices for `koalabot run` that are not settings."""

    mode: str = "socket"  # Slack: "socket" or "http"
    port: int | None = None  # HTTP port (Slack events; later /healthz and /metrics)
    shard_id: int | None = None  # Discord
    shard_count: int | None = None
    #: The process's HTTP application (/healthz, /metrics), served on ``port`` once the
    #: adapters started; an adapter that receives HTTP (Slack events) adds its routes here.
    web_app: web.Application | None = None


class Adapter(Protocol):
    """A running connection to one platform."""

    name: str

    async def start(self) -> None:
        """Connect and begin taking events; returns once running."""
        ...

    async def stop(self) -> None:
        """Stop taking new events and disconnect."""
        ...


class AdapterFactory(Protocol):
    def __call__(self, engine: Engine, settings: Settings, options: RunOptions) -> Adapter: ...
