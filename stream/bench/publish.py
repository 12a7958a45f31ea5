"""`vidcap bench publish`: ordered events/s through vidcap's outbox into JetStream (every event
acknowledged), against raw nats-py JetStream `publish_async` (acks awaited at the end) in the
same run, on the same embedded nats-server. The ratio is the figure.

Events are caption-sized (about 1.5 kB of JSON), spread over several streams, each stream's
seq in order; both runs store every event (checked by the stream's message count).
"""

from __future__ import annotations

import asyncio
import time

import nats
import orjson
from nats.js.api import StreamConfig as JsStreamConfig

from engine.captioner import CaptionOutcome
from stream.config import NatsConfig
from stream.delivery.events import CaptionEvent, Envelope, wire_json
from stream.delivery.nats_server import EmbeddedNatsServer
from stream.delivery.publisher import EventPublisher, connect, event_subject
from stream.sources.frames import FrameTime

STREAMS = 8
CAPTION = {
    "description": "A studio anchor in a dark suit reads the evening news at a glass desk. " * 3,
    "objects": ["news desk", "microphone", "screen", "papers", "laptop"],
    "actions": ["anchor speaking to camera", "screen showing a map"],
    "environment": "television studio with blue lighting",
    "content_type": "real-world footage",
    "specific_style": "news broadcast",
    "production_quality": "professional studio",
    "summary": "An anchor presents the evening news from a studio desk.",
    "logos": ["white BBC logo, lower left", "red breaking-news banner"],
}


def events(count: int) -> list[tuple[Envelope, CaptionEvent]]:
    """Caption events of realistic size, round-robin over the streams."""
    outcome = CaptionOutcome(CAPTION, None, 1, 0.8, 0.1, {"prompt": 700, "output": 200})
    now = time.time()
    return [
        (
            Envelope(f"cam{n % STREAMS}", "bench", n // STREAMS),
            CaptionEvent(
                n // STREAMS, FrameTime(n, n, None, n / 25, now), "cut", 40.0, outcome, "m", 0.1
            ),
        )
        for n in range(count)
    ]


async def fresh_stream(client: nats.NATS, name: str, prefix: str) -> None:
    js = client.jetstream()
    await js.add_stream(JsStreamConfig(name=name, subjects=[f"{prefix}.>"]))


async def stored(client: nats.NATS, name: str) -> int:
    return (await client.jetstream().stream_info(name)).state.messages


async def raw_publish_async(url: str, batch: list[tuple[Envelope, CaptionEvent]]) -> float:
    client = await nats.connect(url)
    await fresh_stream(client, "RAW", "raw")
    js = client.jetstream(publish_async_max_pending=100_000)
    started = time.perf_counter()
    futures = [
        await js.publish_async(
            event_subject("raw", envelope.stream, event.kind),
            wire_json(envelope, event),
            headers={"Nats-Msg-Id": envelope.msg_id},
        )
        for envelope, event in batch
    ]
    await asyncio.gather(*futures)
    seconds = time.perf_counter() - started
    assert await stored(client, "RAW") == len(batch)
    await client.close()
    return len(batch) / seconds


async def vidcap_outbox(
    url: str, batch: list[tuple[Envelope, CaptionEvent]], pending_acks: int
) -> float:
    config = NatsConfig(
        url=url, subject_prefix="ours", stream_name="OURS", max_pending_acks=pending_acks
    )
    publisher = EventPublisher(await connect(config, url), config)
    await publisher.ensure_stream()
    started = time.perf_counter()
    for envelope, event in batch:
        await publisher.publish(envelope, event)
    assert await publisher.flush(600)
    seconds = time.perf_counter() - started
    client = await nats.connect(url)
    assert await stored(client, "OURS") == len(batch)
    await client.close()
    await publisher.close()
    return len(batch) / seconds


async def bench_publish(count: int, rounds: int) -> int:
    batch = events(count)
    pending_acks = NatsConfig().max_pending_acks
    size = len(orjson.dumps(batch[0]))
    print(
        f"{count} events of {size} bytes over {STREAMS} streams, {rounds} rounds, "
        "embedded nats-server"
    )
    print(f"{'round':>5} {'raw publish_async ev/s':>23} {'vidcap outbox ev/s':>19} {'ratio':>6}")
    ratios = []
    for number in range(rounds):
        with EmbeddedNatsServer() as server:
            raw = await raw_publish_async(server.url, batch)
            ours = await vidcap_outbox(server.url, batch, pending_acks)
        ratios.append(ours / raw)
        print(f"{number:5d} {raw:23.0f} {ours:19.0f} {ours / raw:6.2f}", flush=True)
    print(f"median ratio vidcap / raw: {sorted(ratios)[len(ratios) // 2]:.2f} (target >= 0.8)")
    return 0
