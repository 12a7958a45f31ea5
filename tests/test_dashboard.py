"""The dashboard's routes on the real HTTP server against a real nats-server: the page and its
policy, the pushed feed (board, fan-out, limits, slow browsers), JetStream history paged back,
snapshot pictures (names, sizes, types)."""

from __future__ import annotations

import asyncio
import io
import os
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import nats
import orjson
import pytest
from nats.aio.client import Client
from nats.js.api import StreamConfig
from PIL import Image

from stream.config import HttpConfig, NatsConfig
from stream.delivery.nats_server import EmbeddedNatsServer
from stream.fleet.presence import Presence
from stream.service.dashboard import feed as feed_module
from stream.service.dashboard.feed import EventFeed, encode
from stream.service.dashboard.nodes import BUCKET_POLL_S
from stream.service.dashboard.routes import Dashboard
from stream.service.http_server import HttpServer

STATIC = Path(__file__).parents[1] / "stream" / "service" / "dashboard" / "static"


@dataclass
class Served:
    url: str
    client: Client
    dashboard: Dashboard
    server: HttpServer
    prefix: str
    stream_name: str


@pytest.fixture
async def served(nats_server: EmbeddedNatsServer) -> AsyncIterator[Served]:
    config = NatsConfig(url=nats_server.url, subject_prefix="dash", stream_name="DASH")
    client = await nats.connect(nats_server.url)
    await client.jetstream().add_stream(StreamConfig(name="DASH", subjects=["dash.>"]))
    dashboard = Dashboard(config, lambda: client, max_clients=3)
    server = HttpServer(HttpConfig(listen="127.0.0.1:0"))
    dashboard.mount(server.app)
    url = await server.start()
    async with asyncio.timeout(5):
        while not dashboard.feed.following:  # noqa: ASYNC110 (set once subscribed)
            await asyncio.sleep(0.02)
    await client.flush()
    yield Served(url, client, dashboard, server, "dash", "DASH")
    await server.close()
    await client.close()


def caption(stream: str, seq: int, summary: str = "a studio", **extra: Any) -> dict[str, Any]:
    return {
        "schema": "vidcap.caption/2",
        "type": "caption",
        "stream": stream,
        "seq": seq,
        "keyframe": seq,
        "frame": {"index": seq, "captured_at": "2026-12-01T07:00:00.000+00:00"},
        "status": "ok",
        "caption": {"summary": summary, "description": ""},
        **extra,
    }


def status(stream: str, seq: int, state: str) -> dict[str, Any]:
    return {"type": "status", "stream": stream, "seq": seq, "state": state, "detail": ""}


async def publish(served: Served, stream: str, kind: str, event: dict[str, Any]) -> None:
    await served.client.jetstream().publish(f"{served.prefix}.{stream}.{kind}", orjson.dumps(event))


async def read_feed(response: aiohttp.ClientResponse, count: int) -> list[dict[str, Any]]:
    """The next ``count`` pushed events (comments and retry lines skipped)."""
    pushed: list[dict[str, Any]] = []
    async with asyncio.timeout(30):
        while len(pushed) < count:
            line = (await response.content.readline()).decode()
            if line.startswith("data: "):
                pushed.append(orjson.loads(line[6:]))
    return pushed


# ---- the page ----


async def test_page_is_served_with_a_strict_policy_and_its_own_assets(served: Served) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(served.url + "/") as response:
            page = await response.text()
            assert response.status == 200 and response.content_type == "text/html"
            policy = response.headers["Content-Security-Policy"]
            assert "script-src 'self'" in policy and "default-src 'none'" in policy
            assert "unsafe" not in policy
            assert response.headers["X-Content-Type-Options"] == "nosniff"
            assert response.headers["X-Frame-Options"] == "DENY"
        for name, kind in (("app.js", "text/javascript"), ("style.css", "text/css")):
            async with http.get(f"{served.url}/static/{name}") as response:
                assert (response.status, response.content_type) == (200, kind)
        for name in ("index.html", "nope.js", "..%2Froutes.py", "__init__.py"):
            async with http.get(f"{served.url}/static/{name}") as response:
                assert response.status == 404, name
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", page, re.S)
    assert scripts == [(' src="/static/app.js" defer', "")], "no inline script"
    assert "http://" not in page and "https://" not in page, "nothing from the network"
    assert not re.search(r"\son[a-z]+=", page), "no inline event handlers"


def test_the_script_writes_text_never_markup() -> None:
    script = (STATIC / "app.js").read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in script, sink
    assert "https://" not in script and "http://" not in script
    assert "localStorage" not in script, "the token stays in sessionStorage"


# ---- the feed ----


async def test_feed_pushes_each_event_once_to_every_browser(served: Served) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.get(served.url + "/api/feed") as first,
        http.get(served.url + "/api/feed") as second,
    ):
        assert first.content_type == "text/event-stream"
        assert first.headers["Cache-Control"] == "no-store"
        markup = '<img src=x onerror="alert(1)">\ndata: {"forged": true}'
        await publish(served, "cam1", "caption", caption("cam1", 0, markup))
        await served.client.publish("dash.cam1.caption", b"not json")
        await served.client.publish("dash.cam1.weather", orjson.dumps(caption("cam1", 9)))
        await served.client.publish("dash.bad$id.caption", orjson.dumps(caption("x", 9)))
        await publish(served, "cam2", "status", status("cam2", 0, "live"))
        for response in (first, second):
            pushed = await read_feed(response, 2)
            assert [(p["stream"], p["kind"], p["event"]["seq"]) for p in pushed] == [
                ("cam1", "caption", 0),
                ("cam2", "status", 0),
            ]
            assert pushed[0]["event"]["caption"]["summary"] == markup  # as text, one SSE line
            assert abs(pushed[0]["received_at"] - time.time()) < 5


async def test_a_new_browser_gets_the_board_first(served: Served) -> None:
    await publish(served, "cam1", "status", status("cam1", 0, "live"))
    await publish(served, "cam1", "caption", caption("cam1", 1))
    await publish(served, "cam1", "status", status("cam1", 2, "keyframes_dropped"))
    await publish(served, "cam1", "status", status("cam1", 3, "paused"))
    logo = {"type": "logo", "seq": 4, "alert": "appeared", "brand": "Acme", "keyframes": []}
    await publish(served, "cam1", "logo", logo)
    await publish(served, "cam1", "caption", caption("cam1", 5))
    await served.client.flush()
    async with asyncio.timeout(5):
        while served.dashboard.feed.events < 6:  # noqa: ASYNC110 (a counter, no event)
            await asyncio.sleep(0.02)
    async with aiohttp.ClientSession() as http, http.get(served.url + "/api/feed") as response:
        pushed = await read_feed(response, 4)
    # The condition (not the one-off keyframes_dropped), the pause, the logo, the last caption.
    assert [p["event"]["seq"] for p in pushed] == [0, 3, 4, 5]


async def test_browsers_beyond_the_limit_are_refused(served: Served) -> None:
    async with aiohttp.ClientSession() as http:
        feeds = [await http.get(served.url + "/api/feed") for _ in range(3)]
        async with http.get(served.url + "/api/feed") as refused:
            assert refused.status == 503
            assert "too many" in (await refused.json())["error"]
        for response in feeds:
            response.close()
        async with asyncio.timeout(5):
            while served.dashboard.feed.clients:  # noqa: ASYNC110 (handlers end on their own)
                await served.client.publish("dash.cam.status", b"{}")  # a write notices
                await asyncio.sleep(0.1)
        async with http.get(served.url + "/api/feed") as again:
            assert again.status == 200


def test_a_slow_browser_is_dropped_and_the_others_go_on() -> None:
    feed = EventFeed("p", max_clients=4)
    slow, quick = feed.join(), feed.join()
    assert slow is not None and quick is not None
    event = caption("cam", 0, "x" * 1000)
    sent = 0
    started = time.perf_counter()
    while slow.ended is None:
        feed.push("p.cam.caption", orjson.dumps(event))
        sent += 1
        if sent % 100 == 0:
            quick._pending.clear()  # the quick one keeps reading
            quick._bytes = 0
    assert time.perf_counter() - started < 1.0, "pushing never waits for a browser"
    assert slow.ended == "slow" and quick.ended is None
    # Dropped when its buffer was full (the chunks' length varies by a byte or so).
    assert sent >= feed_module.CLIENT_BUFFER_BYTES // (len(encode("cam", "caption", event)) + 2)
    feed.leave(slow)
    assert feed.dropped_clients == 1 and feed.clients == 1


async def test_a_browser_that_stops_reading_is_dropped_over_tcp(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("stream.service.dashboard.routes.WRITE_TIMEOUT_S", 1.0)
    host, port = served.url.removeprefix("http://").split(":")
    _, stuck = await asyncio.open_connection(host, int(port))  # never reads
    stuck.write(f"GET /api/feed HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    await stuck.drain()
    big = caption("cam", 0, "x" * 20_000)
    async with aiohttp.ClientSession() as http, http.get(served.url + "/api/feed") as quick:
        async with asyncio.timeout(5):
            while served.dashboard.feed.clients < 2:  # noqa: ASYNC110 (a count)
                await asyncio.sleep(0.02)
        count = 1000  # 20 MB: more than the socket buffers and the browser's buffer hold
        reading = asyncio.create_task(read_feed(quick, count))
        for seq in range(count):
            await served.client.publish("dash.cam.caption", orjson.dumps({**big, "seq": seq}))
            if seq % 20 == 0:
                await served.client.flush()  # at the pace NATS takes them
        pushed = await reading
        assert [p["event"]["seq"] for p in pushed] == list(range(count))
        async with asyncio.timeout(10):
            while served.dashboard.feed.dropped_clients < 1:  # noqa: ASYNC110 (a count)
                await asyncio.sleep(0.05)
        assert served.dashboard.feed.clients == 1
    stuck.close()


async def test_closing_the_server_ends_open_feeds_at_once(nats_server: EmbeddedNatsServer) -> None:
    client = await nats.connect(nats_server.url)
    dashboard = Dashboard(NatsConfig(url=nats_server.url, jetstream=False), lambda: client)
    server = HttpServer(HttpConfig(listen="127.0.0.1:0"))
    dashboard.mount(server.app)
    url = await server.start()
    async with aiohttp.ClientSession() as http, http.get(url + "/api/feed") as response:
        await response.content.readline()
        started = time.monotonic()
        await server.close()
        assert time.monotonic() - started < 3
    await client.close()


async def test_a_connection_gone_before_the_feed_follows_it_is_no_error_at_close(
    nats_server: EmbeddedNatsServer,
) -> None:
    """vidcap stopped within a second of starting (CI found it): its connection was closing
    before the dashboard subscribed, and the server's close raised nats' ConnectionDrainingError
    (here the connection is closed already: ConnectionClosedError, the same path)."""
    client = await nats.connect(nats_server.url)
    await client.close()
    dashboard = Dashboard(NatsConfig(url=nats_server.url, jetstream=False), lambda: client)
    server = HttpServer(HttpConfig(listen="127.0.0.1:0"))
    dashboard.mount(server.app)
    await server.start()
    await asyncio.sleep(0.5)  # the feed's task found the client and tried to follow it
    await server.close()  # raised before
    assert not dashboard.feed.following


# ---- history ----


async def test_history_pages_back_through_jetstream_without_gaps(served: Served) -> None:
    for seq in range(40):  # cam1 among two busier streams
        await publish(served, "cam1", "status" if seq % 5 == 0 else "caption", caption("cam1", seq))
        for other in ("cam2", "cam3"):
            for _ in range(3):
                await publish(served, other, "caption", caption(other, seq))
    got: list[int] = []
    before: int | None = None
    async with aiohttp.ClientSession() as http:
        while True:
            params = {"limit": "7", **({"before": str(before)} if before else {})}
            async with http.get(f"{served.url}/api/streams/cam1/events", params=params) as r:
                assert r.status == 200
                page = await r.json()
            seqs = [e["event"]["seq"] for e in page["events"]]
            assert len(seqs) <= 7 and seqs == sorted(seqs)
            js_seqs = [e["js_seq"] for e in page["events"]]
            assert js_seqs == sorted(js_seqs)
            got = seqs + got
            before = page["before"]
            if before is None:
                break
        assert got == list(range(40))
        params = {"kind": "status", "limit": "100"}
        async with http.get(f"{served.url}/api/streams/cam1/events", params=params) as r:
            page = await r.json()
        assert [e["event"]["seq"] for e in page["events"]] == list(range(0, 40, 5))
        assert page["before"] is None
        async with http.get(f"{served.url}/api/streams/nobody/events") as r:
            assert (r.status, (await r.json())["events"]) == (200, [])


@pytest.mark.parametrize(
    "query",
    [
        "kind=weather",
        "limit=0",
        "limit=101",
        "limit=-1",
        "before=0",
        "before=1e3",
        "before=99999999999999999999",
        "colour=red",
        "limit=%C2%B2",  # "²": str.isdigit() says yes and int() refuses it (was a 500)
        "before=%E2%91%A0",  # "①"
        "limit=%D9%A5",  # an Arabic-Indic 5, read as 5 before
        "limit=2&limit=50",
        "kind=status&kind=caption",
    ],
)
async def test_history_parameters_are_bounded(served: Served, query: str) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{served.url}/api/streams/cam1/events?{query}") as response:
            assert response.status == 400, query
            assert "error" in await response.json()
        async with http.get(f"{served.url}/api/streams/a.b/events") as response:
            assert response.status == 400


# ---- snapshots ----


def jpeg(width: int = 64, height: int = 36) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(out, "JPEG")
    return out.getvalue()


async def test_snapshots_are_served_by_name_and_only_jpegs(served: Served) -> None:
    store = await served.client.jetstream().create_object_store("DASH_SNAPSHOTS")
    picture = jpeg()
    await store.put("cam1/0a1b2c/7", picture)
    await store.put("cam1/0a1b2c/8", b"<html><script>alert(1)</script>")
    base = served.url + "/api/snapshots/"
    async with aiohttp.ClientSession() as http:
        async with http.get(base + "cam1/0a1b2c/7") as response:
            assert (response.status, response.content_type) == (200, "image/jpeg")
            assert await response.read() == picture
            assert response.headers["X-Content-Type-Options"] == "nosniff"
        for name in (
            "cam1/0a1b2c/8",  # stored, but not a JPEG
            "cam1/0a1b2c/9",  # absent
            "cam1/0A1B2C/7",  # not a session id
            "cam1/0a1b2c/7/x",
            "cam.1/0a1b2c/7",
            "..%2F..%2Fetc/0a1b2c/7",
            "cam1/0a1b2c/" + "9" * 13,
        ):
            async with http.get(base + name) as response:
                assert response.status == 404, name


async def test_snapshots_above_the_size_bound_are_not_served(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await served.client.jetstream().create_object_store("DASH_SNAPSHOTS")
    picture = jpeg(640, 360)
    await store.put("cam1/0a1b2c/1", picture)
    monkeypatch.setattr("stream.service.dashboard.pictures.MAX_PICTURE_BYTES", len(picture) - 1)
    async with (
        aiohttp.ClientSession() as http,
        http.get(served.url + "/api/snapshots/cam1/0a1b2c/1") as response,
    ):
        assert response.status == 404


async def test_without_jetstream_nothing_stored_is_offered(nats_server: EmbeddedNatsServer) -> None:
    client = await nats.connect(nats_server.url)
    config = NatsConfig(url=nats_server.url, jetstream=False)
    dashboard = Dashboard(config, lambda: client)
    server = HttpServer(HttpConfig(listen="127.0.0.1:0"))
    dashboard.mount(server.app)
    url = await server.start()
    try:
        async with aiohttp.ClientSession() as http:
            for path in ("/api/streams/cam1/events", "/api/snapshots/cam1/0a1b2c/1"):
                async with http.get(url + path) as response:
                    assert response.status == 404
                    assert "jetstream is false" in (await response.json())["error"]
    finally:
        await server.close()
        await client.close()


# ---- presence ----


async def test_the_feed_shows_live_vidcaps_and_a_killed_one_going(served: Served) -> None:
    js = served.client.jetstream()
    ttl_s = 2.0

    def node(name: str, session: str, stream: str) -> Presence:
        return Presence(js, "DASH", ttl_s, name, session, lambda: {"owned": [stream]})

    alive, killed = node("host-a:/spool", "ab12", "cam1"), node("host-b:/spool", "cd34", "cam2")
    beating = {}
    for presence in (alive, killed):
        await presence.open()
        beating[presence.key] = asyncio.create_task(_beat(presence, ttl_s / 3))
    try:
        async with aiohttp.ClientSession() as http, http.get(served.url + "/api/feed") as response:
            seen: dict[str, dict[str, Any] | None] = {}
            # The dashboard looks for the bucket again within BUCKET_POLL_S of its creation.
            async with asyncio.timeout(BUCKET_POLL_S + 10):
                while {"cam1", "cam2"} - {s for n in seen.values() if n for s in n["owned"]}:
                    (pushed,) = await read_feed(response, 1)
                    seen[pushed["key"]] = pushed["node"]
            assert (seen[killed.key] or {}).get("pid") == os.getpid()
            beating[killed.key].cancel()  # it writes no more, as if SIGKILLed
            killed_at = time.monotonic()
            async with asyncio.timeout(ttl_s + 10):
                while seen.get(killed.key) is not None:
                    (pushed,) = await read_feed(response, 1)
                    seen[pushed["key"]] = pushed["node"]
            offline_s = time.monotonic() - killed_at
            assert offline_s < ttl_s + 2.0, offline_s  # the README's bound: TTL plus ~1 s
            assert seen[alive.key] is not None  # the one still beating stays
    finally:
        for task in beating.values():
            task.cancel()


async def _beat(presence: Presence, every_s: float) -> None:
    while True:
        await asyncio.sleep(every_s)
        await presence.beat()
