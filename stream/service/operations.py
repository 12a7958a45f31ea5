"""The routes a supervisor and a scraper use: ``/healthz`` (the process answers),
``/readyz`` (it can caption and deliver now; 503 with the reasons otherwise) and ``/metrics``
(Prometheus text: vidcap's registry, and vLLM's when its engine runs in this process)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

NotReady = Callable[[], Awaitable[list[str]]]
"""The reasons vidcap cannot serve now; empty when it is ready."""


class Operations:
    def __init__(
        self, registry: CollectorRegistry, not_ready: NotReady, *, engine_in_process: bool
    ) -> None:
        self._registries = [registry, REGISTRY] if engine_in_process else [registry]
        self._not_ready = not_ready

    def mount(self, app: web.Application) -> None:
        app.add_routes(
            [
                web.get("/healthz", self._healthz),
                web.get("/readyz", self._readyz),
                web.get("/metrics", self._metrics),
            ]
        )

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    async def _readyz(self, request: web.Request) -> web.Response:
        reasons = await self._not_ready()
        if reasons:
            return web.json_response({"status": "not ready", "reasons": reasons}, status=503)
        return web.json_response({"status": "ready"})

    async def _metrics(self, request: web.Request) -> web.Response:
        # REGISTRY holds vLLM's metrics (vllm:*) and the process's; vidcap's have their own.
        body = b"".join(generate_latest(registry) for registry in self._registries)
        response = web.Response(body=body)
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response
