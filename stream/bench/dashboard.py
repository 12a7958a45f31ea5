"""`vidcap bench dashboard`: the CPU the dashboard's push channel costs vidcap.

This process plays vidcap's side: its NATS connection subscribed to ``<prefix>.>`` (the
feed), the HTTP server and one server-sent event stream per browser. A second process
publishes caption events of 16 streams (about 1.5 kB each, with a snapshot reference) at a
steady rate, a third holds N browsers' feeds open and reads them. The figure is this process's
CPU time (user + system) over the publishing, as a share of one core; nats-server's CPU and
the other two processes' are not counted. Every browser must receive every event.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import nats
import orjson

from stream.bench.publish import CAPTION
from stream.config import HttpConfig, NatsConfig
from stream.delivery.nats_server import EmbeddedNatsServer
from stream.service.dashboard.routes import Dashboard
from stream.service.http_server import HttpServer

STREAMS = 16
PREFIX = "bench"
SETTLE_S = 1.0
"""Time for the last events to reach the browsers before the feeds end."""
START_TIMEOUT_S = 120.0
"""For the reader process to start and connect its browsers (a loaded machine is slow)."""


def caption_event(stream: str, seq: int) -> bytes:
    """A caption event shaped and sized as vidcap publishes them."""
    return orjson.dumps(
        {
            "schema": "vidcap.caption/2",
            "type": "caption",
            "stream": stream,
            "session": "0123456789ab",
            "seq": seq,
            "keyframe": seq,
            "frame": {
                "index": seq * 50,
                "pts": seq * 2000,
                "time_base": "1/1000",
                "time_s": seq * 2.0,
                "captured_at": "2026-12-01T07:00:00.000+00:00",
            },
            "selection": {"reason": "cut", "score": 41.8},
            "status": "ok",
            "caption": CAPTION,
            "error": None,
            "model": "Wynd-VidCap-12B",
            "attempts": 1,
            "tokens": {"prompt": 700, "output": 200},
            "timing": {"queue_s": 0.01, "engine_s": 0.84, "first_token_s": 0.12},
            "snapshot": {
                "bucket": "VIDCAP_SNAPSHOTS",
                "name": f"{stream}/0123456789ab/{seq}",
                "bytes": 41250,
                "width": 1280,
                "height": 720,
            },
            "snapshot_error": None,
        }
    )


async def publish(url: str, per_stream_hz: float, seconds: float) -> None:
    """The events of ``STREAMS`` streams, each at ``per_stream_hz``, spread evenly."""
    client = await nats.connect(url)
    period = 1 / (per_stream_hz * STREAMS)
    print("publishing", flush=True)  # the measurement starts: process start-up is not in it
    started = time.monotonic()
    for n in range(int(seconds * per_stream_hz * STREAMS)):
        stream = f"cam{n % STREAMS}"
        await client.publish(f"{PREFIX}.{stream}.caption", caption_event(stream, n // STREAMS))
        await asyncio.sleep(max(0.0, started + (n + 1) * period - time.monotonic()))
    await client.drain()


async def read(base: str, browsers: int) -> None:
    """Hold ``browsers`` feeds open until the server ends them; print how many events each
    received."""
    async with aiohttp.ClientSession() as http:
        counts = await asyncio.gather(*(_count(http, base) for _ in range(browsers)))
    print(orjson.dumps(counts).decode(), flush=True)


async def _count(http: aiohttp.ClientSession, base: str) -> int:
    events = 0
    async with http.get(base + "/api/feed") as response:
        assert response.status == 200, response.status
        try:
            async for line in response.content:
                events += line.startswith(b"data: ")
        except aiohttp.ClientPayloadError:
            pass  # the server closing aborts its connections
    return events


@dataclass(frozen=True, slots=True)
class Result:
    browsers: int
    events_per_s: float
    cpu_share: float
    """CPU seconds per second of the feed's process (1.0: one core)."""
    cpu_per_event_us: float
    """CPU microseconds of the feed's process per published event (all browsers')."""
    delivered: float
    """Share of published events every browser received (1.0: all)."""


async def measure(url: str, browsers: int, per_stream_hz: float, seconds: float) -> Result:
    client = await nats.connect(url)
    dashboard = Dashboard(
        NatsConfig(url=url, subject_prefix=PREFIX, jetstream=False), lambda: client
    )
    # Every simulated browser is the one client 127.0.0.1.
    server = HttpServer(HttpConfig(listen="127.0.0.1:0", max_connections_per_client=256))
    dashboard.mount(server.app)
    base = await server.start()
    try:
        reader = await _role("read", base, browsers)
        async with asyncio.timeout(START_TIMEOUT_S):
            while not dashboard.feed.following or dashboard.feed.clients < browsers:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        publisher = await _role("publish", url, per_stream_hz, seconds)
        assert publisher.stdout is not None
        await publisher.stdout.readline()
        cpu, started = _cpu_s(), time.monotonic()
        await publisher.wait()
        cpu, took = _cpu_s() - cpu, time.monotonic() - started
        await asyncio.sleep(SETTLE_S)
    finally:
        await server.close()  # ends the feeds: the reader prints its counts
        await client.close()
    counts = orjson.loads((await reader.communicate())[0])
    published = int(seconds * per_stream_hz * STREAMS)
    delivered = min(counts) / published if counts else 1.0
    return Result(browsers, published / took, cpu / took, cpu / published * 1e6, delivered)


async def _role(role: str, *args: Any) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "stream.bench.dashboard",
        "--role",
        role,
        *map(str, args),
        stdout=asyncio.subprocess.PIPE,
    )


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def bench(browsers: list[int], rates: list[float], seconds: float) -> None:
    server = EmbeddedNatsServer()
    url = await asyncio.to_thread(server.start)
    print(f"{STREAMS} streams, {len(caption_event('cam0', 0))} B caption events, {seconds:g} s")
    print("captions/s/stream  browsers  events/s  CPU (% of a core)  CPU µs/event  delivered")
    try:
        for rate in rates:
            for count in browsers:
                r = await measure(url, count, rate, seconds)
                print(
                    f"{rate:17g}  {r.browsers:8d}  {r.events_per_s:8.1f}  "
                    f"{100 * r.cpu_share:17.2f}  {r.cpu_per_event_us:12.0f}  "
                    f"{100 * r.delivered:8.1f} %"
                )
    finally:
        await asyncio.to_thread(server.stop)


def main(argv: list[str]) -> None:
    """The benchmark's helper processes (``vidcap bench dashboard`` runs the benchmark)."""
    parser = argparse.ArgumentParser(prog="python -m stream.bench.dashboard")
    parser.add_argument("--role", choices=("read", "publish"), required=True)
    args, rest = parser.parse_known_args(argv)
    if args.role == "read":
        asyncio.run(read(rest[0], int(rest[1])))
    else:
        asyncio.run(publish(rest[0], float(rest[1]), float(rest[2])))


if __name__ == "__main__":
    main(sys.argv[1:])
