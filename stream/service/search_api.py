"""`/api/search`, `/api/airtime`, `/api/segments`: the search index over HTTP.

They read the index file ``vidcap index`` (or an index in ``vidcap run``) writes; without
one they answer 503. Reads are open, like ``GET /api/streams``: the server listens on
127.0.0.1 by default, and ``http.token`` guards the routes that change something. Every
parameter is bounded (text lengths, ``limit``), unknown parameters are refused, at most
``MAX_CONCURRENT_QUERIES`` run at once and each is interrupted after ``QUERY_TIMEOUT_S``.
Errors are JSON: ``{"error": "..."}``."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

import orjson
from aiohttp import web

from engine.errors import VidcapError
from stream.ids import validate_stream_id
from stream.search.queries import MAX_LIMIT, SearchQuery, iso, parse_moment, search
from stream.search.query_text import MAX_QUERY_CHARS, QueryError
from stream.search.reports import DEFAULT_SEGMENTS, MAX_SEGMENTS, airtime, segments
from stream.search.store import reading
from stream.service.json_errors import json_error

MAX_CONCURRENT_QUERIES: Final = 4
QUERY_TIMEOUT_S: Final = 5.0
MAX_PARAM_CHARS: Final = 200

_WINDOW: Final = ("since", "until", "stream")
_SEARCH_PARAMS: Final = frozenset(
    {"q", "logo", "object", "content_type", "quality", "limit", *_WINDOW}
)
_REPORT_PARAMS: Final = frozenset(_WINDOW)
_SEGMENT_PARAMS: Final = frozenset({*_WINDOW, "limit"})

Query = Callable[[sqlite3.Connection], Any]


class SearchApi:
    """``index_stopped``: why this process's own index stopped following (None: it follows,
    or another process writes the index); its answers would be stale, so none is given."""

    def __init__(
        self, db: Path | None, index_stopped: Callable[[], str | None] = lambda: None
    ) -> None:
        self._db = db
        self._index_stopped = index_stopped
        self._slots = asyncio.Semaphore(MAX_CONCURRENT_QUERIES)

    def mount(self, app: web.Application) -> None:
        app.add_routes(
            [
                web.get("/api/search", self._search),
                web.get("/api/airtime", self._airtime),
                web.get("/api/segments", self._segments),
            ]
        )

    async def _search(self, request: web.Request) -> web.Response:
        params = _params(request, _SEARCH_PARAMS)
        since, until = _moment(params, "since"), _moment(params, "until")
        query = _checked(
            lambda: SearchQuery(
                text=params.get("q", ""),
                stream=params.get("stream"),
                since=since,
                until=until,
                logo=params.get("logo"),
                object=params.get("object"),
                content_type=params.get("content_type"),
                quality=params.get("quality"),
                limit=_limit(params, 20, MAX_LIMIT),
            )
        )
        hits = await self._run(lambda db: search(db, query))
        return _json({"results": hits})

    async def _airtime(self, request: web.Request) -> web.Response:
        params = _params(request, _REPORT_PARAMS)
        since, until = _window(params)
        rows = await self._run(lambda db: airtime(db, since, until, params.get("stream")))
        return _json({"since": iso(since), "until": iso(until), "airtime": rows})

    async def _segments(self, request: web.Request) -> web.Response:
        params = _params(request, _SEGMENT_PARAMS)
        since, until = _window(params)
        limit = _limit(params, DEFAULT_SEGMENTS, MAX_SEGMENTS)
        rows = await self._run(lambda db: segments(db, since, until, params.get("stream"), limit))
        return _json({"since": iso(since), "until": iso(until), "segments": rows})

    async def _run(self, query: Query) -> Any:
        if self._db is None or not self._db.exists():
            raise json_error(
                web.HTTPServiceUnavailable,
                "no search index: run `vidcap index` (or enable the index) and try again",
            )
        if (why := self._index_stopped()) is not None:
            raise json_error(
                web.HTTPServiceUnavailable,
                f"the search index stopped ({why}): its answers would miss what came since",
            )
        async with self._slots:
            try:
                return await asyncio.to_thread(_bounded, self._db, query)
            except QueryError as exc:
                raise json_error(web.HTTPBadRequest, str(exc)) from None
            except VidcapError as exc:  # the file cannot be opened
                raise json_error(web.HTTPServiceUnavailable, str(exc)) from None
            except sqlite3.OperationalError as exc:
                if "interrupted" in str(exc):
                    raise json_error(
                        web.HTTPServiceUnavailable,
                        f"the query ran longer than {QUERY_TIMEOUT_S:g} s: narrow it",
                    ) from None
                raise json_error(
                    web.HTTPServiceUnavailable, f"the index is unavailable: {exc}"
                ) from None


def _bounded(path: Path, query: Query) -> Any:
    deadline = time.monotonic() + QUERY_TIMEOUT_S
    with reading(path) as db:
        db.set_progress_handler(lambda: time.monotonic() > deadline, 10_000)
        return query(db)


def _params(request: web.Request, allowed: frozenset[str]) -> Mapping[str, str]:
    query = request.rel_url.query
    unknown = sorted(set(query) - allowed)
    if unknown:
        raise json_error(
            web.HTTPBadRequest,
            f"unknown parameter(s) {', '.join(unknown)[:MAX_PARAM_CHARS]}; "
            f"allowed: {', '.join(sorted(allowed))}",
        )
    for name in query:
        if len(query.getall(name)) > 1:
            raise json_error(web.HTTPBadRequest, f"{name} given more than once")
        bound = MAX_QUERY_CHARS if name == "q" else MAX_PARAM_CHARS
        if len(query[name]) > bound:
            raise json_error(web.HTTPBadRequest, f"{name} is longer than {bound} characters")
        if any(ord(character) < 0x20 or ord(character) == 0x7F for character in query[name]):
            raise json_error(web.HTTPBadRequest, f"{name} contains a control character")
    if query.get("stream"):  # empty: no filter
        try:
            validate_stream_id(query["stream"])
        except ValueError as exc:  # no stream can have that id: say so, as the other routes do
            raise json_error(web.HTTPBadRequest, str(exc)) from None
    return query


def _checked(build: Callable[[], SearchQuery]) -> SearchQuery:
    try:
        return build()
    except QueryError as exc:
        raise json_error(web.HTTPBadRequest, str(exc)) from None


def _limit(params: Mapping[str, str], default: int, most: int) -> int:
    text = params.get("limit")
    if text is None:
        return default
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= most:
        raise json_error(web.HTTPBadRequest, f"limit must be an integer from 1 to {most}")
    return int(text)


def _moment(params: Mapping[str, str], name: str) -> float | None:
    try:
        return parse_moment(name, params.get(name))
    except QueryError as exc:
        raise json_error(web.HTTPBadRequest, str(exc)) from None


def _window(params: Mapping[str, str]) -> tuple[float, float]:
    since = _moment(params, "since")
    if since is None:
        raise json_error(web.HTTPBadRequest, "since is required (ISO time or 90s / 10m / 2h / 1d)")
    until = _moment(params, "until")
    until = time.time() if until is None else until
    if since >= until:
        raise json_error(web.HTTPBadRequest, "the time window is empty: since must be before until")
    return since, until


def _json(data: Any) -> web.Response:
    return web.Response(body=orjson.dumps(data), content_type="application/json")
