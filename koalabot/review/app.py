"""The review page: an aiohttp application rendering rated answers server-side.

Everything it serves comes from this package (Jinja2 templates, one stylesheet, one script);
nothing is fetched from elsewhere. Every page and action needs the review token: given once as
``?token=`` it buys a session cookie that dies with the process (see `access`), and the
address is cleaned. Actions
are POSTed forms, so the page works without its script; the script adds keyboard shortcuts and
swaps the one card an action changed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup, escape

from koalabot.export.redact import PLACEHOLDERS, Kind, find
from koalabot.review.access import COOKIE, GATE_KEY, Gate, day, guard, row_id, safe_next
from koalabot.store.database import Database
from koalabot.store.review import (
    REASONS,
    AnswerNotFoundError,
    Decision,
    Facets,
    Filters,
    RatedAnswer,
    Rating,
    ReviewError,
    State,
    decide,
    facets,
    get_answer,
    list_answers,
    undo,
)

STATIC = Path(__file__).parent / "static"


@dataclass(frozen=True)
class ReviewConfig:
    """What one review server is: the store, the token that opens it, who is reviewing."""

    db: Database
    token: str
    reviewer: str


class FacetCache:
    """The filters' choices, read again at most once a minute (reading them scans tables)."""

    def __init__(self, db: Database, ttl: float = 60.0) -> None:
        self.db = db
        self.ttl = ttl
        self._value: Facets | None = None
        self._read_at = 0.0

    async def get(self) -> Facets:
        """The cached choices, fresh enough."""
        now = time.monotonic()
        if self._value is None or now - self._read_at > self.ttl:
            self._value = await facets(self.db)
            self._read_at = now
        return self._value


CONFIG_KEY = web.AppKey("review_config", ReviewConfig)
TEMPLATES_KEY = web.AppKey("review_templates", Environment)
FACETS_KEY = web.AppKey("review_facets", FacetCache)


# --- rendering helpers ---------------------------------------------------------------------


def highlight(text: str) -> Markup:
    """The text, escaped, with what an export redacts marked (and what it becomes on hover)."""
    out: list[str] = []
    at = 0
    for span in find(text):
        out.append(escape(text[at : span.start]))
        shown = "the user's pseudonym" if span.kind is Kind.MENTION else PLACEHOLDERS[span.kind]
        out.append(
            Markup('<mark class="redact" data-kind="{}" title="exported as {}">{}</mark>').format(
                span.kind.value, shown, text[span.start : span.end]
            )
        )
        at = span.end
    out.append(escape(text[at:]))
    return Markup("").join(out)


def _when(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _seconds(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f} s"


def _params(value: dict[str, Any]) -> str:
    return " · ".join(f"{k}={json.dumps(v)}" for k, v in sorted(value.items())) or "(defaults)"


def templates() -> Environment:
    """The Jinja2 environment of the page (autoescaping on)."""
    env = Environment(
        loader=PackageLoader("koalabot.review", "templates"),
        autoescape=select_autoescape(default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(highlight=highlight, when=_when, seconds=_seconds, params=_params)
    env.globals.update(REASONS=REASONS, Decision=Decision)
    return env


# --- filters from the address ----------------------------------------------------------------


def _enum(kind: type[Rating] | type[State], text: str) -> Any:
    try:
        return kind(text)
    except ValueError:
        return None


def filters_from(query: Any) -> Filters:
    """Filters from the list's query string; unknown values are ignored rather than refused."""
    until = day(query.get("until", ""))
    return Filters(
        platform=query.get("platform") or None,
        channel=query.get("channel") or None,
        model=query.get("model") or None,
        rating=_enum(Rating, query.get("rating", "")),
        since=day(query.get("since", "")),
        until=until + timedelta(days=1) if until else None,
        state=_enum(State, query.get("state", "")),
    )


# --- handlers --------------------------------------------------------------------------------


async def index(request: web.Request) -> web.Response:
    """The list: filters on top, a page of rated answers, links to newer and older pages."""
    config = request.app[CONFIG_KEY]
    query = request.query
    page = await list_answers(
        config.db,
        filters_from(query),
        before=row_id(query.get("before")),
        after=row_id(query.get("after")),
    )
    kept = {k: v for k, v in query.items() if k not in ("before", "after") and v}

    def link(**cursor: int) -> str:
        return "/?" + urlencode({**kept, **cursor})

    html = (
        request.app[TEMPLATES_KEY]
        .get_template("list.html")
        .render(
            page=page,
            facets=await request.app[FACETS_KEY].get(),
            query=kept,
            reviewer=config.reviewer,
            newer=link(after=page.newer) if page.newer is not None else None,
            older=link(before=page.older) if page.older is not None else None,
            here=request.path_qs,
            states=list(State),
            ratings=list(Rating),
        )
    )
    return web.Response(text=html, content_type="text/html")


def _card(request: web.Request, item: RatedAnswer) -> web.Response:
    html = request.app[TEMPLATES_KEY].get_template("card.html").render(item=item, here="/")
    return web.Response(text=html, content_type="text/html")


async def answer(request: web.Request) -> web.Response:
    """One answer on its own (what the script swaps in after an action)."""
    return _card(request, await get_answer(request.app[CONFIG_KEY].db, _answer_id(request)))


def _answer_id(request: web.Request) -> int:
    answer_id = row_id(request.match_info["answer_id"])
    if answer_id is None:
        raise web.HTTPNotFound()
    return answer_id


def _back(request: web.Request, form: Any) -> str:
    return safe_next(str(form.get("next") or "/"))  # only ever back to a page of this site


async def review(request: web.Request) -> web.StreamResponse:
    """Store a decision (include, exclude with a reason, correct with the better answer)."""
    config = request.app[CONFIG_KEY]
    answer_id = _answer_id(request)
    form = await request.post()
    try:
        decision = Decision(str(form.get("decision", "")))
    except ValueError:
        raise web.HTTPBadRequest(text="decision must be include, exclude or correct") from None
    reason = form.get("reason")
    correction = form.get("correction")
    await decide(
        config.db,
        answer_id,
        decision,
        reviewer=config.reviewer,
        reason=str(reason) if reason else None,
        correction=str(correction) if correction is not None else None,
    )
    return await _after_action(request, form, answer_id)


async def clear(request: web.Request) -> web.StreamResponse:
    """Take a decision back: the answer is unreviewed again."""
    answer_id = _answer_id(request)
    form = await request.post()
    await undo(request.app[CONFIG_KEY].db, answer_id)
    return await _after_action(request, form, answer_id)


async def _after_action(request: web.Request, form: Any, answer_id: int) -> web.StreamResponse:
    if request.headers.get("X-Requested-With") == "koalabot-review":
        return await answer(request)
    raise web.HTTPSeeOther(f"{_back(request, form)}#answer-{answer_id}")


@web.middleware
async def errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Review errors as 404/400 with their message (the script shows it)."""
    try:
        return await handler(request)
    except AnswerNotFoundError as exc:
        return web.Response(status=404, text=str(exc))
    except ReviewError as exc:
        return web.Response(status=400, text=str(exc))


@web.middleware
async def no_store(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Pages hold conversations: keep them out of caches, frames and referrers."""
    response = await handler(request)
    response.headers.setdefault("Cache-Control", "no-store")
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Content-Security-Policy"] = (
        "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'"
    )
    return response


def review_app(db: Database, token: str, reviewer: str) -> web.Application:
    """The review application on an open database; anyone holding ``token`` may review."""
    if not token:
        raise ValueError("the review token must not be empty")
    app = web.Application(middlewares=[no_store, guard, errors])
    app[CONFIG_KEY] = ReviewConfig(db=db, token=token, reviewer=reviewer)
    app[TEMPLATES_KEY] = templates()
    app[GATE_KEY] = Gate(token, app[TEMPLATES_KEY].get_template("unauthorized.html").render)
    app[FACETS_KEY] = FacetCache(db)
    app.router.add_get("/", index)
    app.router.add_get("/answers/{answer_id}", answer)
    app.router.add_post("/answers/{answer_id}/review", review)
    app.router.add_post("/answers/{answer_id}/undo", clear)
    app.router.add_static("/static/", STATIC)
    return app


__all__ = ["COOKIE", "ReviewConfig", "filters_from", "highlight", "review_app", "templates"]
