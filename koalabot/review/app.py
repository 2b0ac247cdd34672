"""The review page: an aiohttp application rendering rated answers server-side.

Everything it serves comes from this package (Jinja2 templates, one stylesheet, one script);
nothing is fetched from elsewhere. Every page and action needs the review token: given once as
``?token=`` it becomes an HttpOnly, SameSite=Strict cookie and the address is cleaned. Actions
are POSTed forms, so the page works without its script; the script adds keyboard shortcuts and
swaps the one card an action changed.
"""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup, escape

from koalabot.export.redact import PLACEHOLDERS, Kind, find
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

COOKIE = "koalabot_review"
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


# --- access --------------------------------------------------------------------------------


def _token_ok(given: str | None, token: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), token.encode())


def _bearer(request: web.Request) -> str | None:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    return value if scheme.lower() == "bearer" else None


@web.middleware
async def require_token(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """401 without the token; with ``?token=`` set the cookie and drop it from the address."""
    if request.path.startswith("/static/"):
        return await handler(request)
    token = request.app[CONFIG_KEY].token
    in_query = request.query.get("token")
    if request.method == "GET" and _token_ok(in_query, token):
        query = {k: v for k, v in request.query.items() if k != "token"}
        clean = request.path + (f"?{urlencode(query)}" if query else "")
        response = web.Response(status=303, headers={"Location": clean})
        response.set_cookie(COOKIE, token, httponly=True, samesite="Strict", path="/")
        return response
    if not (_token_ok(request.cookies.get(COOKIE), token) or _token_ok(_bearer(request), token)):
        page = request.app[TEMPLATES_KEY].get_template("unauthorized.html").render()
        return web.Response(status=401, text=page, content_type="text/html")
    if request.method == "POST" and not _same_origin(request):
        return web.Response(status=403, text="cross-site request refused")
    return await handler(request)


def _same_origin(request: web.Request) -> bool:
    origin = request.headers.get("Origin")
    return origin is None or origin == f"{request.scheme}://{request.host}"


# --- filters from the address ----------------------------------------------------------------


def _day(text: str) -> datetime | None:
    try:
        day = date.fromisoformat(text)
    except ValueError:
        return None
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def _enum(kind: type[Rating] | type[State], text: str) -> Any:
    try:
        return kind(text)
    except ValueError:
        return None


def filters_from(query: Any) -> Filters:
    """Filters from the list's query string; unknown values are ignored rather than refused."""
    until = _day(query.get("until", ""))
    return Filters(
        platform=query.get("platform") or None,
        channel=query.get("channel") or None,
        model=query.get("model") or None,
        rating=_enum(Rating, query.get("rating", "")),
        since=_day(query.get("since", "")),
        until=until + timedelta(days=1) if until else None,
        state=_enum(State, query.get("state", "")),
    )


def _cursor(text: str | None) -> int | None:
    return int(text) if text and text.isdigit() else None


# --- handlers --------------------------------------------------------------------------------


async def index(request: web.Request) -> web.Response:
    """The list: filters on top, a page of rated answers, links to newer and older pages."""
    config = request.app[CONFIG_KEY]
    query = request.query
    page = await list_answers(
        config.db,
        filters_from(query),
        before=_cursor(query.get("before")),
        after=_cursor(query.get("after")),
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
    text = request.match_info["answer_id"]
    if not text.isdigit():
        raise web.HTTPNotFound()
    return int(text)


def _back(request: web.Request, form: Any) -> str:
    target = str(form.get("next") or "/")
    # Only ever back to a page of this site.
    return target if target.startswith("/") and not target.startswith("//") else "/"


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
    app = web.Application(middlewares=[no_store, require_token, errors])
    app[CONFIG_KEY] = ReviewConfig(db=db, token=token, reviewer=reviewer)
    app[TEMPLATES_KEY] = templates()
    app[FACETS_KEY] = FacetCache(db)
    app.router.add_get("/", index)
    app.router.add_get("/answers/{answer_id}", answer)
    app.router.add_post("/answers/{answer_id}/review", review)
    app.router.add_post("/answers/{answer_id}/undo", clear)
    app.router.add_static("/static/", STATIC)
    return app


__all__ = ["COOKIE", "ReviewConfig", "filters_from", "highlight", "review_app", "templates"]
