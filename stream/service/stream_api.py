"""`/api/streams`: list and inspect streams; add, remove, pause and resume them at run time.

Reads are open (the server listens on 127.0.0.1 by default); every route that changes
something needs ``Authorization: Bearer <http.token>``, and without ``http.token`` the API is
read-only. A new stream is validated exactly as in the config file. Errors are JSON:
``{"error": "..."}``."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Protocol

import orjson
from aiohttp import web

from stream.config import API_URL_SCHEMES, ConfigError, HttpConfig, StreamConfig, parse_section
from stream.service.bearer import BearerToken
from stream.service.json_errors import json_error
from stream.service.openapi import OPENAPI


class StreamControl(Protocol):
    """What the API drives: the running vidcap."""

    def snapshots(self) -> list[dict[str, Any]]: ...

    def snapshot(self, stream_id: str) -> dict[str, Any] | None: ...

    async def add(self, stream: StreamConfig) -> dict[str, Any]:
        """Start a stream; ValueError when its id is taken."""
        ...

    async def remove(self, stream_id: str) -> bool:
        """Drain and stop a stream; whether it ended without an error."""
        ...

    async def pause(self, stream_id: str, pause: bool) -> dict[str, Any]: ...

    def check_changeable(self, stream_id: str) -> None:
        """Raise an HTTP 503 while vidcap starts or stops; ValueError while it is removed."""
        ...


class StreamApi:
    def __init__(self, config: HttpConfig, control: StreamControl) -> None:
        self._control = control
        self._file_folders = [folder.expanduser().resolve() for folder in config.api_files]
        self._body_timeout_s = config.request_timeout_s
        token = config.token.get_secret_value() if config.token else None
        self._token = BearerToken(token) if token else None

    def mount(self, app: web.Application) -> None:
        app.add_routes(
            [
                web.get("/openapi.json", self._openapi),
                web.get("/api/streams", self._list),
                web.post("/api/streams", self._add),
                web.get("/api/streams/{id}", self._get),
                web.delete("/api/streams/{id}", self._remove),
                web.post("/api/streams/{id}/pause", self._pause),
                web.post("/api/streams/{id}/resume", self._resume),
            ]
        )

    async def _openapi(self, request: web.Request) -> web.Response:
        return web.json_response(OPENAPI)

    async def _list(self, request: web.Request) -> web.Response:
        return _json({"streams": self._control.snapshots()})

    async def _get(self, request: web.Request) -> web.Response:
        return _json(self._known(request))

    async def _add(self, request: web.Request) -> web.Response:
        self._authorise(request)
        stream = parse_stream(await _json_body(request, self._body_timeout_s))
        if "://" not in stream.url:
            # The file as checked, for good: a relative path would name another file when
            # vidcap restarts elsewhere, and a link could be pointed elsewhere after the check.
            stream = stream.model_copy(update={"url": str(self._check_file(stream.url))})
        try:
            created = await self._control.add(stream)
        except ValueError as exc:
            raise json_error(web.HTTPConflict, str(exc)) from None
        return _json(created, status=201, headers={"Location": f"/api/streams/{stream.id}"})

    async def _remove(self, request: web.Request) -> web.Response:
        self._authorise(request)
        stream_id = self._changeable(request)
        try:
            ok = await self._control.remove(stream_id)
        except ValueError as exc:
            raise json_error(web.HTTPConflict, str(exc)) from None
        return _json({"id": stream_id, "removed": True, "ended_cleanly": ok})

    async def _pause(self, request: web.Request) -> web.Response:
        return await self._set_paused(request, True)

    async def _resume(self, request: web.Request) -> web.Response:
        return await self._set_paused(request, False)

    async def _set_paused(self, request: web.Request, pause: bool) -> web.Response:
        self._authorise(request)
        stream_id = self._changeable(request)
        try:
            return _json(await self._control.pause(stream_id, pause))
        except ValueError as exc:
            raise json_error(web.HTTPConflict, str(exc)) from None

    def _changeable(self, request: web.Request) -> str:
        """The id of a stream that can change now. While vidcap starts the configured streams
        are not there yet: that is a 503 ("later"), not a 404."""
        try:
            self._control.check_changeable(request.match_info["id"])
        except ValueError as exc:
            raise json_error(web.HTTPConflict, str(exc)) from None
        return str(self._known(request)["id"])

    def _known(self, request: web.Request) -> dict[str, Any]:
        snapshot = self._control.snapshot(request.match_info["id"])
        if snapshot is None:
            raise json_error(web.HTTPNotFound, "no such stream")
        return snapshot

    def _check_file(self, path: str) -> Path:
        """The file, links and ``..`` resolved, if it is under ``http.api_files``: the token is
        not a key to every picture and video the process can read."""
        resolved = Path(path).expanduser().resolve()
        if not any(resolved.is_relative_to(folder) for folder in self._file_folders):
            where = "is not under http.api_files" if self._file_folders else "needs http.api_files"
            raise json_error(
                web.HTTPUnprocessableEntity,
                f"a file path through the API {where} (the folders it may read from)",
            )
        return resolved

    def _authorise(self, request: web.Request) -> None:
        if self._token is None:
            raise json_error(
                web.HTTPForbidden, "the API is read-only: set http.token to change streams"
            )
        if not self._token.matches(request.headers.get("Authorization", "")):
            raise json_error(
                web.HTTPUnauthorized,
                "missing or wrong bearer token",
                headers={"WWW-Authenticate": "Bearer"},
            )


def parse_stream(data: Any) -> StreamConfig:
    """A stream's settings from a request, validated as the config file's ``streams[]``."""
    if not isinstance(data, dict):
        raise json_error(web.HTTPBadRequest, "expected a JSON object: a streams[] entry")
    try:
        stream = parse_section(StreamConfig, data, "stream")
    except ConfigError as exc:
        raise json_error(web.HTTPUnprocessableEntity, str(exc)) from None
    scheme = stream.url.split("://", 1)[0].lower() if "://" in stream.url else None
    if scheme is not None and scheme not in API_URL_SCHEMES:
        allowed = ", ".join(f"{s}://" for s in sorted(API_URL_SCHEMES))
        raise json_error(web.HTTPUnprocessableEntity, f"the API takes {allowed} or a file path")
    if stream.options:
        raise json_error(
            web.HTTPUnprocessableEntity, "options (FFmpeg's) are for the config file only"
        )
    return stream


async def _json_body(request: web.Request, timeout_s: float) -> Any:
    if request.content_type != "application/json":
        raise json_error(web.HTTPUnsupportedMediaType, "send application/json")
    try:
        async with asyncio.timeout(timeout_s):
            body = await request.read()
    except TimeoutError:
        why = f"the body did not arrive within http.request_timeout_s ({timeout_s:g} s)"
        raise json_error(web.HTTPRequestTimeout, why) from None
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise json_error(web.HTTPBadRequest, "the body is not JSON") from None


def _json(data: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(data), status=status, content_type="application/json", headers=headers
    )
