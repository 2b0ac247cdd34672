"""The operator's HTTP surface: /healthz for load balancers, /metrics for Prometheus.

`koalabot run` serves these on its HTTP port; the Slack adapter in HTTP mode adds its events
route to the same application, so one port serves everything.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

from aiohttp import web

from koalabot.engine.engine import Engine
from koalabot.logsafe import mask_urls

ENGINE_KEY = web.AppKey("engine", Engine)


async def healthz(request: web.Request) -> web.Response:
    """200 when the database and a TGI endpoint answer; 503 with the reasons otherwise."""
    engine = request.app[ENGINE_KEY]
    problems = await engine.health()
    if not engine.accepting:
        problems["shutdown"] = "shutting down"
    status = 503 if problems else 200
    body = {
        "status": "unhealthy" if problems else "ok",
        **({"problems": problems} if problems else {}),
    }
    text = mask_urls(json.dumps(body))  # endpoint URLs may carry user:password@
    return web.Response(status=status, text=text, content_type="application/json")


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text exposition of the engine's metrics."""
    engine = request.app[ENGINE_KEY]
    return web.Response(
        body=engine.metrics.render(), headers={"Content-Type": "text/plain; version=0.0.4"}
    )


@web.middleware
async def refuse_while_stopping(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Once shutdown began, take no new work: a 503 makes Slack deliver the event again later,
    to a replica that is still up (or to this one, restarted)."""
    if request.method == "POST" and not request.app[ENGINE_KEY].accepting:
        return web.Response(status=503, text="shutting down", headers={"Retry-After": "5"})
    return await handler(request)


def ops_app(engine: Engine) -> web.Application:
    """An aiohttp application with /healthz and /metrics, ready for more routes."""
    app = web.Application(middlewares=[refuse_while_stopping])
    app[ENGINE_KEY] = engine
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    return app
