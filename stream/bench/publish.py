"""`vidcap bench publish`: ordered events/s through vidcap's outbox into JetStream (every event
acknowledged), against raw nats-py JetStream `publish_async` (acks awaited at the end) in the
same run, on the same embedded nats-server. The ratio is the figure. The outbox runs without
the disk spool and with it under each fsync policy; the median time ``publish()`` takes (until
the event counts as produced: queued, and spooled as the policy promises) is the spool's added
latency per event.

Events are caption-sized (about 1.5 kB of JSON), spread over several streams, each stream's
seq in order; both runs store every event (checked by the stream's message count).
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import nats
import orjson
from nats.js.api import StreamConfig as JsStreamConfig

from engine.captioner import CaptionOutcome
from stream.config import NatsConfig, SpoolConfig
from stream.delivery.events import CaptionEvent, Envelope, wire_json
from stream.delivery.nats_server import EmbeddedNatsServer
from stream.delivery.publisher import EventPublisher, connect, event_subject
from stream.delivery.spool import open_spool
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


POLICIES = (None, "never", "interval", "always")
"""No spool, then the spool under each fsync policy."""


async def vidcap_outbox(
    url: str, batch: list[tuple[Envelope, CaptionEvent]], fsync: str | None, spool_dir: Path
) -> tuple[float, float]:
    """Events/s through the outbox (all acknowledged), and the median ``publish()`` time."""
    name = f"OURS{POLICIES.index(fsync)}"
    config = NatsConfig(url=url, subject_prefix=name.lower(), stream_name=name)
    spool = None
    if fsync is not None:
        spool, _ = open_spool(spool_dir / name, SpoolConfig(fsync=fsync))  # type: ignore[arg-type]
        spool.start()
    publisher = EventPublisher(await connect(config, url), config, spool=spool)
    await publisher.ensure_stream()
    produce_s: list[float] = []

    async def one_stream(stream: str) -> None:  # as the pipelines do: each its own, in order
        for envelope, event in batch:
            if envelope.stream == stream:
                before = time.perf_counter()
                await publisher.publish(envelope, event)
                produce_s.append(time.perf_counter() - before)

    started = time.perf_counter()
    await asyncio.gather(*(one_stream(f"cam{n}") for n in range(STREAMS)))
    assert await publisher.flush(600)
    seconds = time.perf_counter() - started
    client = await nats.connect(url)
    assert await stored(client, name) == len(batch)
    await client.close()
    await publisher.close()
    return len(batch) / seconds, statistics.median(produce_s)


async def bench_publish(count: int, rounds: int) -> int:
    batch = events(count)
    size = len(orjson.dumps(batch[0]))
    print(
        f"{count} events of {size} bytes over {STREAMS} streams, {rounds} rounds, "
        "embedded nats-server; spool in the temporary directory"
    )
    print(
        f"{'round':>5} {'outbox':>15} {'raw ev/s':>9} {'vidcap ev/s':>11} {'ratio':>6} "
        f"{'publish() median':>17}"
    )
    ratios: dict[str | None, list[float]] = {policy: [] for policy in POLICIES}
    latencies: dict[str | None, list[float]] = {policy: [] for policy in POLICIES}
    for number in range(rounds):
        with EmbeddedNatsServer() as server, tempfile.TemporaryDirectory() as spool_dir:
            raw = await raw_publish_async(server.url, batch)
            for policy in POLICIES:
                ours, latency = await vidcap_outbox(server.url, batch, policy, Path(spool_dir))
                ratios[policy].append(ours / raw)
                latencies[policy].append(latency)
                label = "no spool" if policy is None else f"spool {policy}"
                print(
                    f"{number:5d} {label:>15} {raw:9.0f} {ours:11.0f} {ours / raw:6.2f} "
                    f"{latency * 1e6:14.1f} us",
                    flush=True,
                )
    for policy in POLICIES:
        label = "no spool" if policy is None else f"spool, fsync {policy}"
        print(
            f"median ratio vidcap / raw, {label}: {statistics.median(ratios[policy]):.2f} "
            f"(publish() median {statistics.median(latencies[policy]) * 1e6:.1f} us)"
        )
    print("targets: no spool >= 0.8, spool (default fsync: interval) >= 0.5")
    return 0
