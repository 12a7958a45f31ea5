"""The HTTP server of a running vidcap: liveness, readiness that follows NATS, metrics with
vLLM's, the OpenAPI document against the real routes, the API's refusals, a taken port.
Real vidcap, vLLM (tiny model, CPU) and nats-server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import nats
import pytest
from prometheus_client import CollectorRegistry

from engine.vllm_engine import VllmEngine
from stream.config import HttpConfig, NatsConfig, WhipConfig, parse_config
from stream.delivery.nats_server import EmbeddedNatsServer
from stream.runner import Runner
from stream.service.dashboard.routes import Dashboard
from stream.service.http_server import HttpListenError, HttpServer
from stream.service.openapi import OPENAPI
from stream.service.operations import Operations
from stream.service.search_api import SearchApi
from stream.service.stream_api import StreamApi
from stream.sources.whip_server import WhipServer
from tests.conftest import engine_and_nats, free_port
from tests.test_nats_permissions import FixedEngine

TOKEN = "api-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@asynccontextmanager
async def running(
    config: dict[str, Any], engine: VllmEngine, nats_url: str
) -> AsyncIterator[Runner]:
    runner = Runner(parse_config(config))
    task = asyncio.create_task(runner.run(nats_url, engine))
    async with asyncio.timeout(60):
        while not runner.running:  # noqa: ASYNC110 (set once start-up is over)
            await asyncio.sleep(0.05)
    try:
        yield runner
    finally:
        runner.request_stop()
        assert await task == 0


async def readiness(http: aiohttp.ClientSession, base: str) -> tuple[int, dict[str, Any]]:
    async with http.get(f"{base}/readyz") as response:
        return response.status, await response.json()


async def wait_readiness(http: aiohttp.ClientSession, base: str, status: int) -> dict[str, Any]:
    async with asyncio.timeout(30):
        while True:
            got, body = await readiness(http, base)
            if got == status:
                return body
            await asyncio.sleep(0.2)


async def test_readiness_follows_nats_and_liveness_holds(
    tmp_path: Path, vllm_engine: VllmEngine, tiny_model: Path
) -> None:
    server = EmbeddedNatsServer(tmp_path / "nats", port=free_port())
    server.start()
    config = {
        "http": {"listen": "127.0.0.1:0", "token": TOKEN},
        **engine_and_nats(server.url, "ready", tiny_model, stream_name="READY"),
    }
    try:
        async with (
            running(config, vllm_engine, server.url) as runner,
            aiohttp.ClientSession() as http,
        ):
            assert (await readiness(http, runner.http_url)) == (200, {"status": "ready"})
            server.kill()
            body = await wait_readiness(http, runner.http_url, 503)
            assert body["reasons"] == ["NATS is not connected"], body
            async with http.get(f"{runner.http_url}/healthz") as response:
                assert response.status == 200  # alive: a supervisor must not restart it
            server.start()  # same port, same JetStream store
            await wait_readiness(http, runner.http_url, 200)
    finally:
        server.stop()


async def test_readiness_names_a_missing_jetstream_stream(
    nats_server: EmbeddedNatsServer, vllm_engine: VllmEngine, tiny_model: Path
) -> None:
    config = {
        "http": {"listen": "127.0.0.1:0", "token": TOKEN},
        **engine_and_nats(nats_server.url, "gone", tiny_model, stream_name="GONE"),
    }
    async with (
        running(config, vllm_engine, nats_server.url) as runner,
        aiohttp.ClientSession() as http,
    ):
        await wait_readiness(http, runner.http_url, 200)
        client = await nats.connect(nats_server.url)
        await client.jetstream().delete_stream("GONE")
        await client.close()
        _, body = await readiness(http, runner.http_url)
        assert body["reasons"] == ["JetStream stream GONE does not exist"], body


async def test_while_the_engine_loads_readiness_says_so_alone(
    nats_server: EmbeddedNatsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stream is made once the engine is up: until then its absence is no reason to
    name (a trial read "JetStream stream ... does not exist" during the load). The engine's
    load is a stand-in that waits for the test: a real vLLM load takes a minute."""
    loaded = asyncio.Event()

    async def slow_load(*_: object) -> FixedEngine:
        await loaded.wait()
        return FixedEngine()

    monkeypatch.setattr("stream.runner.start_engine", slow_load)
    config = parse_config(
        {
            "http": {"listen": "127.0.0.1:0", "token": TOKEN},
            "nats": {"url": nats_server.url, "stream_name": "LOADING", "subject_prefix": "load"},
            "streams": [{"id": "configured", "url": "rtsp://127.0.0.1:1/configured"}],
        }
    )
    runner = Runner(config)
    run = asyncio.create_task(runner.run(nats_server.url))
    try:
        async with aiohttp.ClientSession() as http:
            async with asyncio.timeout(20):
                while not runner.http_url or runner._client is None:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
            _, body = await readiness(http, runner.http_url)
            assert body["reasons"] == ["the engine is loading"], body
            stream = {"id": "early", "url": "rtsp://127.0.0.1:1/early"}
            bearer = {"Authorization": f"Bearer {TOKEN}"}
            async with http.post(
                f"{runner.http_url}/api/streams", json=stream, headers=bearer
            ) as r:
                assert r.status == 503 and r.headers["Retry-After"] == "5"
                said = await r.json()
                assert said == {"error": "vidcap is starting (the engine loads) or stopping"}
            # A configured stream is not started yet: changing it is "later", not "no such
            # stream" (it was 404, and automation took the camera for gone).
            for method, route in [
                ("DELETE", "/api/streams/configured"),
                ("POST", "/api/streams/configured/pause"),
                ("POST", "/api/streams/configured/resume"),
            ]:
                async with http.request(method, runner.http_url + route, headers=bearer) as r:
                    assert r.status == 503 and r.headers["Retry-After"] == "5", (route, r.status)
            loaded.set()
            await wait_readiness(http, runner.http_url, 200)
    finally:
        loaded.set()
        runner.request_stop()
        await run


async def test_metrics_carry_vidcap_and_vllm_and_the_api_refuses_bad_requests(
    nats_server: EmbeddedNatsServer,
    vllm_engine: VllmEngine,
    tiny_model: Path,
    sample_clip: Path,
    tmp_path: Path,
) -> None:
    (tmp_path / "elsewhere.mp4").symlink_to("/etc/passwd")  # in an allowed folder, to outside
    files = [str(sample_clip.parent), str(tmp_path)]
    config = {
        "http": {"listen": "127.0.0.1:0", "token": TOKEN, "api_files": files},
        "pipeline": {"max_streams": 1},
        **engine_and_nats(nats_server.url, "m", tiny_model, stream_name="M"),
    }
    async with (
        running(config, vllm_engine, nats_server.url) as runner,
        aiohttp.ClientSession() as http,
    ):
        base = runner.http_url
        async with http.get(f"{base}/metrics") as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain")
            text = await response.text()
        assert "vidcap_outbox_events" in text and "vllm:num_requests_running" in text
        assert "\nvidcap_http_connections 1.0\n" in text  # this scrape's own
        assert "\nvidcap_http_connections_refused_total 0.0\n" in text
        refusals: list[tuple[str, str, dict[str, str], Any, int, str]] = [
            ("POST", "/api/streams", {}, {"id": "a", "url": str(sample_clip)}, 401, "token"),
            ("POST", "/api/streams", {"Authorization": "Bearer wrong"}, {}, 401, "token"),
            ("POST", "/api/streams", AUTH, "not json", 400, "not JSON"),
            ("POST", "/api/streams", AUTH, [1, 2], 400, "JSON object"),
            ("POST", "/api/streams", AUTH, {"id": "a b", "url": "x"}, 422, "stream: 1 invalid"),
            ("POST", "/api/streams", AUTH, {"id": "a", "url": "rtps://h/x"}, 422, "rtsp://"),
            ("POST", "/api/streams", AUTH, {"id": "a", "url": "x", "colour": 1}, 422, "colour"),
            (
                "POST",
                "/api/streams",
                AUTH,
                {"id": "a", "url": "tcp://127.0.0.1:9"},
                422,
                "file path",
            ),
            (
                "POST",
                "/api/streams",
                AUTH,
                {"id": "a", "url": "file:///etc/passwd"},
                422,
                "file path",
            ),
            ("POST", "/api/streams", AUTH, {"id": "a", "url": "concat:/a|/b"}, 422, "prefix"),
            # FFmpeg's protocol-with-options form, which got past the check before
            ("POST", "/api/streams", AUTH, {"id": "a", "url": "subfile,,:/x"}, 422, "prefix"),
            ("POST", "/api/streams", AUTH, {"id": "a", "url": "/x\u001b[31m"}, 422, "control"),
            # The token is no key to every file the process can read (a fresh-clone trial
            # added a PNG of a password from /root and read it back as a snapshot)
            ("POST", "/api/streams", AUTH, {"id": "a", "url": "/etc/passwd"}, 422, "api_files"),
            (
                "POST",
                "/api/streams",
                AUTH,
                {"id": "a", "url": f"{sample_clip.parent}/../../../../../etc/passwd"},
                422,
                "not under http.api_files",
            ),
            (
                "POST",
                "/api/streams",
                AUTH,
                {"id": "a", "url": str(tmp_path / "elsewhere.mp4")},
                422,
                "not under http.api_files",
            ),
            (
                "POST",
                "/api/streams",
                AUTH,
                {"id": "a", "url": "/x.mp4", "options": {"protocol_whitelist": "file"}},
                422,
                "config file only",
            ),
            ("DELETE", "/api/streams/nope", AUTH, None, 404, "no such stream"),
            ("POST", "/api/streams/nope/pause", AUTH, None, 404, "no such stream"),
            ("GET", "/api/streams/nope", {}, None, 404, "no such stream"),
        ]
        for method, path, headers, body, status, says in refusals:
            data = body if isinstance(body, str) else None
            json_body = None if isinstance(body, str) or body is None else body
            if data is not None:
                headers = {**headers, "Content-Type": "application/json"}
            async with http.request(
                method, base + path, headers=headers, data=data, json=json_body
            ) as r:
                text = await r.text()
                assert (r.status, says in text) == (status, True), (method, path, r.status, text)
                assert r.headers["X-Content-Type-Options"] == "nosniff"
        async with http.post(
            f"{base}/api/streams", data=b"{}", headers={**AUTH, "Content-Type": "text/plain"}
        ) as r:
            assert r.status == 415
        # Through a link in an allowed folder to an allowed file: the stream reads the file
        # as checked (the link could be pointed elsewhere later; a relative path would name
        # another file after a restart elsewhere, a trial found).
        (tmp_path / "link.mp4").symlink_to(sample_clip)
        clip = {"id": "clip", "url": str(tmp_path / "link.mp4")}
        async with http.post(f"{base}/api/streams", json=clip, headers=AUTH) as r:
            assert r.status == 201 and r.headers["Location"] == "/api/streams/clip"
            assert (await r.json())["url"] == str(await asyncio.to_thread(sample_clip.resolve))
        async with http.post(f"{base}/api/streams", json=clip, headers=AUTH) as r:
            assert r.status == 409 and "already running" in await r.text()
        another = {"id": "clip2", "url": str(sample_clip)}
        async with http.post(f"{base}/api/streams", json=another, headers=AUTH) as r:
            assert r.status == 409 and "1 streams already" in await r.text()


async def test_without_a_token_the_api_is_read_only(
    nats_server: EmbeddedNatsServer, vllm_engine: VllmEngine, tiny_model: Path, sample_clip: Path
) -> None:
    config = {
        "streams": [{"id": "clip", "url": str(sample_clip), "loop": True}],
        "http": {"listen": "127.0.0.1:0"},
        **engine_and_nats(nats_server.url, "ro", tiny_model),
    }
    async with (
        running(config, vllm_engine, nats_server.url) as runner,
        aiohttp.ClientSession() as http,
    ):
        async with http.get(f"{runner.http_url}/api/streams") as r:
            assert [s["id"] for s in (await r.json())["streams"]] == ["clip"]
        for path in ("/api/streams/clip/pause", "/api/streams"):
            async with http.post(runner.http_url + path, json={}, headers=AUTH) as r:
                assert r.status == 403 and "read-only" in await r.text()
        async with http.delete(f"{runner.http_url}/api/streams/clip", headers=AUTH) as r:
            assert r.status == 403


def test_the_openapi_document_describes_exactly_the_routes() -> None:
    http = HttpServer(HttpConfig(listen="127.0.0.1:0"))
    Operations(CollectorRegistry(), _ready, engine_in_process=False).mount(http.app)
    StreamApi(HttpConfig(listen="127.0.0.1:0"), None).mount(http.app)  # type: ignore[arg-type]
    SearchApi(None).mount(http.app)
    Dashboard(NatsConfig(), lambda: None).mount(http.app)
    whip = WhipServer(WhipConfig(enabled=True, token=TOKEN), lambda _: None)  # type: ignore[arg-type]
    whip.mount(http.app)
    served: set[tuple[str, str]] = set()
    for resource in http.app.router.resources():
        _collect(resource, served)
    documented = {
        (path, method.upper()) for path, item in OPENAPI["paths"].items() for method in item
    }
    assert served == documented


async def test_every_api_error_is_json_the_routers_own_too() -> None:
    """aiohttp answers an unknown route, a wrong method and an oversize body in plain text;
    a client of the JSON API gets ``{"error": ...}`` for those as for vidcap's own refusals."""
    config = HttpConfig(listen="127.0.0.1:0", token=TOKEN)
    http = HttpServer(config)
    StreamApi(config, None).mount(http.app)  # type: ignore[arg-type]
    SearchApi(None).mount(http.app)
    base = await http.start()
    oversize = b"{" + b" " * (70 * 1024) + b"}"
    try:
        async with aiohttp.ClientSession() as client:
            for method, path, body, status, says in [
                ("GET", "/api/nope", None, 404, "no such API route"),
                ("GET", "/api/streams/a/b/c", None, 404, "no such API route"),
                ("PUT", "/api/streams", None, 405, "PUT is not allowed here (GET, HEAD, POST)"),
                ("POST", "/api/streams", oversize, 413, "body size"),
                # the default: no file path through the API
                (
                    "POST",
                    "/api/streams",
                    b'{"id": "a", "url": "/etc/passwd"}',
                    422,
                    "needs http.api_files",
                ),
            ]:
                headers = {**AUTH, "Content-Type": "application/json"}
                async with client.request(method, base + path, data=body, headers=headers) as r:
                    assert r.status == status, (method, path, r.status)
                    assert r.content_type == "application/json", (path, await r.text())
                    assert says in (await r.json())["error"]
                    assert r.headers["X-Content-Type-Options"] == "nosniff"
            async with client.put(base + "/api/streams") as r:
                assert set(r.headers["Allow"].split(",")) == {"GET", "HEAD", "POST"}
            async with client.get(base + "/nope") as r:  # not the API: aiohttp's own answer
                assert (r.status, r.content_type) == (404, "text/plain")
    finally:
        await http.close()


async def test_a_stalled_body_gets_a_408_and_a_hang_up_is_no_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A trial's finding: a token holder's POST whose body stopped half-way was never
    answered (the README promises a 408 after http.request_timeout_s), and hanging up then
    logged ERROR with a 30-line traceback."""
    config = HttpConfig(listen="127.0.0.1:0", token=TOKEN, request_timeout_s=1)
    http = HttpServer(config)
    StreamApi(config, None).mount(http.app)  # type: ignore[arg-type]
    port = int((await http.start()).rsplit(":", 1)[1])
    head = (
        "POST /api/streams HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f'Authorization: Bearer {TOKEN}\r\nContent-Length: 10\r\n\r\n{{"id"'
    ).encode()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(head)
        async with asyncio.timeout(5):
            answer = await reader.read(4096)
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
        assert b'{"error":"the body did not arrive within http.request_timeout_s (1 s)"}' in answer
        writer.close()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(head)
        await asyncio.sleep(0.3)
        writer.transport.abort()  # hangs up mid-body
        await asyncio.sleep(0.5)
    finally:
        await http.close()
    noisy = [r for r in caplog.records if r.levelname == "ERROR" or r.exc_info]
    assert not noisy, [r.getMessage() for r in noisy]


def _collect(resource: Any, into: set[tuple[str, str]]) -> None:
    app = getattr(resource, "_app", None)
    if app is not None:  # a mounted sub-application (WHIP): its paths carry the prefix
        for inner in app.router.resources():
            _collect(inner, into)
        return
    for route in resource:
        if route.method != "HEAD":
            into.add((resource.canonical, route.method))


async def _ready() -> list[str]:
    return []


async def test_a_taken_port_is_a_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = HttpServer(HttpConfig(listen=f"127.0.0.1:{port}"))
        with pytest.raises(HttpListenError, match=f"http.listen 127.0.0.1:{port}: .*in use"):
            await server.start()
