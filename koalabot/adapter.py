"""What a platform adapter offers koalabot, and how koalabot finds the installed ones.

An adapter is a module registered under the entry-point group ``koalabot.adapters`` (name →
module): koalabot's own are ``slack``, ``discord`` and ``terminal`` (pyproject.toml), and a
third-party package adds a platform by registering its module the same way — no change here.
A module that ``koalabot run`` can start defines ``create_adapter(engine, settings, options)``
returning an ``Adapter``; the terminal's module offers ``koalabot chat`` its ``TerminalChat``.

Entry points rather than import strings: koalabot never names ``koalabot_adapters`` (the import
rules forbid it), the set of platforms is whatever is installed, and an unknown name can list
them. The cost is that the package must be installed (``pip install -e .``) for its own adapters
to be found.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from types import ModuleType
from typing import TYPE_CHECKING, Protocol

from aiohttp import web

from koalabot.errors import ConfigError
from koalabot.events import ReplySink, ThreadKey

if TYPE_CHECKING:
    from koalabot.config import Settings
    from koalabot.engine.engine import Engine

#: The entry-point group adapters register under.
GROUP = "koalabot.adapters"


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

    def sink_for(self, where: ThreadKey) -> ReplySink:
        """A sink for an existing thread (to tell it about an answer a crash cut off, or to
        answer a message kept while the database was away)."""
        ...


class AdapterFactory(Protocol):
    def __call__(self, engine: Engine, settings: Settings, options: RunOptions) -> Adapter: ...


def installed() -> dict[str, EntryPoint]:
    """The adapters installed in this environment, by platform name."""
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def load_module(name: str) -> ModuleType:
    """The adapter module registered as ``name``; a one-line ConfigError if there is none."""
    found = installed()
    if name not in found:
        names = ", ".join(sorted(found)) or "none (is koalabot installed? pip install -e .)"
        raise ConfigError(f"unknown platform {name!r}: the installed ones are {names}")
    module = found[name].load()
    if not isinstance(module, ModuleType):
        raise ConfigError(f"the adapter {name!r} must be registered as a module, not an object")
    return module


def load_factory(name: str) -> AdapterFactory:
    """The ``create_adapter`` of the adapter ``name``, for ``koalabot run``."""
    factory: AdapterFactory | None = getattr(load_module(name), "create_adapter", None)
    if factory is None:
        raise ConfigError(f"the platform {name!r} cannot be run by `koalabot run`")
    return factory
