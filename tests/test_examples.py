"""The documented example subscribers, run as a user would, against a real nats-server."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from engine.captioner import CaptionOutcome
from stream.config import NatsConfig
from stream.delivery.events import (
    CaptionEvent,
    Envelope,
    Event,
    LogoEvent,
    LogoSighting,
    StatusEvent,
)
from stream.delivery.nats_server import EmbeddedNatsServer
from stream.delivery.publisher import EventPublisher, connect
from stream.sources.frames import FrameTime

EXAMPLES = Path(__file__).parents[1] / "examples"


AT = 1795615323.12  # 2026-11-25T14:02:03.120Z
FAILED = CaptionOutcome(None, {"reason": "timeout", "detail": "", "excerpt": ""}, 1, 60.0)


def live(seq: int) -> tuple[int, Event]:
    return seq, StatusEvent("live", "", AT)


def appeared(seq: int, brand: str, matched: str) -> tuple[int, Event]:
    return seq, LogoEvent("appeared", brand, matched, (LogoSighting(4, 8.0, AT),))


async def publish(url: str, events: list[tuple[int, Event]]) -> None:
    config = NatsConfig(url=url, subject_prefix="ex", stream_name="EX")
    publisher = EventPublisher(await connect(config, url), config)
    await publisher.ensure_stream()
    for seq, event in events:
        await publisher.publish(Envelope("cam1", "s", seq), event)
    assert await publisher.close() == 0


async def start(script: str, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, str(EXAMPLES / script), *args, stdout=asyncio.subprocess.PIPE
    )


async def read_events(process: asyncio.subprocess.Process, count: int) -> list[dict[str, Any]]:
    assert process.stdout is not None
    return [
        orjson.loads(await asyncio.wait_for(process.stdout.readline(), 20)) for _ in range(count)
    ]


async def test_durable_subscriber_resumes_after_a_restart(nats_server: EmbeddedNatsServer) -> None:
    args = ("--nats", nats_server.url, "--stream", "EX", "--durable", "t", "--subject", "ex.>")
    await publish(nats_server.url, [live(n) for n in range(5)])
    first = await start("durable_subscriber.py", *args)
    assert [e["seq"] for e in await read_events(first, 5)] == [0, 1, 2, 3, 4]
    first.terminate()
    assert await asyncio.wait_for(first.wait(), 20) == 0

    await publish(nats_server.url, [live(n) for n in range(5, 9)])  # while it is down
    second = await start("durable_subscriber.py", *args)
    assert [e["seq"] for e in await read_events(second, 4)] == [5, 6, 7, 8]
    second.terminate()
    rest, _ = await asyncio.wait_for(second.communicate(), 20)
    assert rest == b""  # nothing acknowledged before came again


async def test_logo_webhook_posts_alerts_and_retries_a_failed_post(
    nats_server: EmbeddedNatsServer,
) -> None:
    received: list[dict[str, Any]] = []
    answers = iter([500])  # the first POST fails, the rest succeed

    async def hook(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.Response(status=next(answers, 200))

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    failed = CaptionEvent(0, FrameTime(0, None, None, 0.0, AT), "start", 0.0, FAILED, "m", 0.0)
    alerts = [appeared(5, "Nike", "swoosh"), (6, failed), appeared(7, "Adidas", "stripes")]
    await publish(nats_server.url, alerts)
    forwarder = await start(
        "logo_webhook.py",
        "--nats",
        nats_server.url,
        "--webhook",
        f"http://127.0.0.1:{port}/hook",
        "--prefix",
        "ex",
        "--stream",
        "EX",
    )
    async with asyncio.timeout(30):
        while len(received) < 3:  # noqa: ASYNC110 (the webhook handler appends)
            await asyncio.sleep(0.1)
    forwarder.terminate()
    await forwarder.wait()
    await runner.cleanup()
    brands = [body["alert"]["brand"] for body in received]
    assert brands == ["Nike", "Adidas", "Nike"]  # the failed one again, after the next
    assert received[0]["text"].startswith("Nike appeared on cam1 at 2026-11-25T14:02:03")
