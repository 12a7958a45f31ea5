"""The API's errors: ``{"error": "..."}`` with the status, on every ``/api/`` route, also where
aiohttp answers by itself in plain text (an unknown route, a method a route does not take, a
body over the limit)."""

from __future__ import annotations

from typing import Final

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

API_PREFIX: Final = "/api/"


def json_error(
    kind: type[web.HTTPException], message: str, headers: dict[str, str] | None = None
) -> web.HTTPException:
    return kind(
        text=orjson.dumps({"error": message}).decode(),
        content_type="application/json",
        headers=headers,
    )


@web.middleware
async def api_errors_in_json(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if request.path.startswith(API_PREFIX) and exc.status >= 400:
            if exc.content_type != "application/json":
                exc.text = orjson.dumps({"error": _said_plainly(request, exc)}).decode()
                exc.content_type = "application/json"
        raise


def _said_plainly(request: web.Request, exc: web.HTTPException) -> str:
    if isinstance(exc, web.HTTPNotFound):
        return "no such API route"
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(exc.allowed_methods))
        return f"{request.method} is not allowed here ({allowed})"
    return (exc.text or exc.reason).removeprefix(f"{exc.status}: ")
