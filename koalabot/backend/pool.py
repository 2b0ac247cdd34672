"""Several model server endpoints: pick the healthy one with the fewest requests in flight,
retry what may pass (before any token was received), and bring a failed endpoint back once
its health check passes again."""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import ssl as ssl_module
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from koalabot.backend.endpoint import Endpoint
from koalabot.backend.wire import Wire
from koalabot.errors import BackendError, BackendTimeoutError

log = logging.getLogger(__name__)

T = TypeVar("T")

#: The longest wait between two attempts, however many retries are configured.
MAX_RETRY_DELAY = 10.0


@dataclass(frozen=True)
class EndpointStatus:
    """What one endpoint looks like from here, for operators, tests and the bench."""

    url: str
    healthy: bool
    in_flight: int
    requests: int
    connections_opened: int


class EndpointPool:
    """The endpoints, their health, and the retry policy of the calls made to them."""

    def __init__(
        self,
        urls: Sequence[str],
        *,
        connect_timeout: float,
        retries: int,
        retry_base_delay: float,
        health_check_interval: float,
        ssl: ssl_module.SSLContext | bool | None,
        api_key: str | None = None,
    ) -> None:
        if not urls:
            raise ValueError("at least one model server URL is needed")
        self.endpoints = [
            Endpoint(
                url,
                connect_timeout=connect_timeout,
                ssl=ssl,
                on_down=self.mark_down,
                api_key=api_key,
            )
            for url in urls
        ]
        self.retries = retries
        self.retry_base_delay = retry_base_delay
        self.health_check_interval = health_check_interval
        self._probes: dict[Endpoint, asyncio.Task[None]] = {}
        self._last_pick = dict.fromkeys(self.endpoints, 0)
        self._picks = itertools.count(1)
        self.closed = False

    def pick(self, avoid: set[Endpoint]) -> Endpoint:
        """The healthy endpoint with the fewest requests in flight (the least recently picked
        on a tie), preferring ones this request has not failed on; any endpoint when none is
        healthy, so a lone server that restarted is found again by the next request."""
        healthy = [e for e in self.endpoints if e.healthy]
        pool = [e for e in healthy if e not in avoid] or healthy
        if not pool:
            pool = [e for e in self.endpoints if e not in avoid] or self.endpoints
        chosen = min(pool, key=lambda e: (e.in_flight, self._last_pick[e]))
        self._last_pick[chosen] = next(self._picks)
        return chosen

    async def run(
        self, op: Callable[[Endpoint], Awaitable[T]], *, deadline: float, retries: int | None = None
    ) -> tuple[Endpoint, T]:
        """Run ``op`` on a picked endpoint, retrying retryable BackendErrors with exponential
        backoff and jitter, on another endpoint where there is one. The returned endpoint still
        counts the request in flight: the caller calls ``done(endpoint)`` when finished.
        Past ``deadline`` (loop time) BackendTimeoutError is raised."""
        if self.closed:
            raise RuntimeError("the model backend is closed")
        loop = asyncio.get_running_loop()
        avoid: set[Endpoint] = set()
        for attempt in itertools.count():
            endpoint = self.pick(avoid)
            endpoint.in_flight += 1
            try:
                async with asyncio.timeout_at(deadline):
                    result = await op(endpoint)
            except TimeoutError:
                self.done(endpoint)
                raise BackendTimeoutError() from None
            except BackendError as exc:
                self.done(endpoint)
                # A server's Retry-After wins over a shorter backoff (the deadline still rules).
                delay = max(self._backoff(attempt), exc.retry_after or 0.0)
                most = self.retries if retries is None else retries
                if not exc.retryable or attempt >= most or loop.time() + delay > deadline:
                    raise
                log.warning(
                    "%s failed (%s); retry %d of %d in %.2fs",
                    endpoint.url,
                    type(exc).__name__,
                    attempt + 1,
                    self.retries,
                    delay,
                )
                avoid.add(endpoint)
                await asyncio.sleep(delay)
                continue
            except BaseException:
                self.done(endpoint)
                raise
            self.mark_up(endpoint)
            return endpoint, result
        raise AssertionError("unreachable")  # pragma: no cover

    async def call(
        self, op: Callable[[Endpoint], Awaitable[T]], *, deadline: float, retries: int | None = None
    ) -> T:
        """``run`` for a request that is over when ``op`` returns."""
        endpoint, result = await self.run(op, deadline=deadline, retries=retries)
        self.done(endpoint)
        return result

    def set_wire(self, wire: Wire) -> None:
        """Every endpoint speaks ``wire`` from now on."""
        for endpoint in self.endpoints:
            endpoint.wire = wire

    def done(self, endpoint: Endpoint) -> None:
        """A request to ``endpoint`` is over."""
        endpoint.in_flight -= 1

    def _backoff(self, attempt: int) -> float:
        # "Equal jitter": half the exponential step for sure, the other half at random, so
        # clients that failed together do not come back together.
        step = min(MAX_RETRY_DELAY, self.retry_base_delay * 2.0**attempt)
        return step / 2 + random.uniform(0, step / 2)

    def mark_down(self, endpoint: Endpoint) -> None:
        """Skip ``endpoint`` until its ``/health`` passes; probe it every interval."""
        endpoint.forget_info()
        if not endpoint.healthy or self.closed:
            return
        endpoint.healthy = False
        interval = self.health_check_interval
        log.warning("%s is down; probing /health every %ss", endpoint.url, interval)
        self._probes[endpoint] = asyncio.create_task(self._probe_until_healthy(endpoint))

    def mark_up(self, endpoint: Endpoint) -> None:
        """``endpoint`` works (a request or a probe succeeded)."""
        if endpoint.healthy:
            return
        endpoint.healthy = True
        log.info("%s is back", endpoint.url)
        probe = self._probes.pop(endpoint, None)
        if probe is not None and probe is not asyncio.current_task():
            probe.cancel()

    async def _probe_until_healthy(self, endpoint: Endpoint) -> None:
        while not endpoint.healthy:
            await asyncio.sleep(self.health_check_interval)
            if await endpoint.probe():
                self.mark_up(endpoint)

    async def health(self) -> dict[str, bool]:
        """Probe every endpoint now; update and return their health."""
        results = await asyncio.gather(*(e.probe() for e in self.endpoints))
        for endpoint, ok in zip(self.endpoints, results, strict=True):
            if ok:
                self.mark_up(endpoint)
            else:
                self.mark_down(endpoint)
        return {e.url: ok for e, ok in zip(self.endpoints, results, strict=True)}

    def status(self) -> list[EndpointStatus]:
        """A snapshot of every endpoint."""
        return [
            EndpointStatus(e.url, e.healthy, e.in_flight, e.requests, e.connections_opened)
            for e in self.endpoints
        ]

    async def close(self) -> None:
        """Stop the probes and close every session."""
        self.closed = True
        probes = list(self._probes.values())
        self._probes.clear()
        for probe in probes:
            probe.cancel()
        await asyncio.gather(*probes, return_exceptions=True)
        await asyncio.gather(*(e.close() for e in self.endpoints))
