"""The outbox is bounded in bytes, and an event the server cannot take never stalls delivery:
it is replaced in its slot by a status event saying so (real nats-server on 127.0.0.1)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from engine.captioner import CaptionOutcome
from stream.config import NatsConfig
from stream.delivery.events import CaptionEvent, Envelope, StatusEvent
from stream.delivery.nats_server import EmbeddedNatsServer
from stream.delivery.publisher import EventPublisher, connect
from stream.sources.frames import FrameTime
from tests.test_outbox import VALIDATE, free_port, stored_events

AT = 1795615323.12


def caption_of(size: int, keyframe: int = 0) -> CaptionEvent:
    """A caption event whose description is ``size`` characters long."""
    caption = {
        "description": "x" * size,
        "objects": [],
        "actions": [],
        "environment": "e",
        "content_type": "c",
        "specific_style": "s",
        "production_quality": "p",
        "summary": "s",
        "logos": [],
    }
    outcome = CaptionOutcome(caption, None, 1, 0.5)
    return CaptionEvent(
        keyframe, FrameTime(keyframe, None, None, 0.0, AT), "cut", 1.0, outcome, "m", 0.0
    )


def forgive_oversized_captions(violations: list[str]) -> None:
    """These tests build captions far above the schema's limits on purpose (the guard keeps
    them out in production): the outbox is the last line of defence they test."""
    assert all("data.caption" in v for v in violations), violations
    violations.clear()


async def test_an_event_above_max_payload_is_replaced_in_its_slot_and_delivery_goes_on(
    nats_server: EmbeddedNatsServer, events_match_published_schemas: list[str]
) -> None:
    # Seen: a 1.2 MB caption passed the guard; MaxPayloadError was retried forever and the
    # outbox delivered nothing more, for any stream.
    config = NatsConfig(url=nats_server.url, subject_prefix="big", stream_name="BIG")
    publisher = EventPublisher(await connect(config, nats_server.url), config)
    await publisher.ensure_stream()
    await publisher.publish(Envelope("cam", "s", 0), caption_of(100))
    await publisher.publish(Envelope("cam", "s", 1), caption_of(1_200_000, keyframe=1))
    await publisher.publish(Envelope("cam", "s", 2), caption_of(100, keyframe=2))
    await publisher.publish(Envelope("other", "s", 0), StatusEvent("live", "", AT))
    assert await publisher.flush(15), "delivery stalled behind the oversized event"
    assert await publisher.close() == 0
    events = await stored_events(nats_server.url, "BIG")
    for event in events:
        VALIDATE[event["type"]](event)
    cam = [(e["seq"], e["type"], e.get("state")) for e in events if e["stream"] == "cam"]
    assert cam == [(0, "caption", None), (1, "status", "event_too_large"), (2, "caption", None)]
    notice = next(e for e in events if e.get("state") == "event_too_large")
    assert notice["kind"] == "caption" and notice["bytes"] > notice["max_payload"] > 0
    assert any(e["stream"] == "other" for e in events)
    forgive_oversized_captions(events_match_published_schemas)


async def test_the_outbox_is_bounded_in_bytes_as_well_as_in_events(
    tmp_path: Path, events_match_published_schemas: list[str]
) -> None:
    server = EmbeddedNatsServer(tmp_path / "nats", port=free_port())
    server.start()
    config = NatsConfig(
        url=server.url,
        subject_prefix="mb",
        stream_name="MB",
        ack_timeout_s=0.5,
        outbox_max_bytes=1024 * 1024,
    )
    publisher = EventPublisher(await connect(config, server.url), config)
    await publisher.ensure_stream()
    server.kill()
    # 100 kB events: ten fill the 1 MiB outbox long before its 10,000-event limit.
    for seq in range(10):
        await asyncio.wait_for(publisher.publish(Envelope("cam", "s", seq), caption_of(100_000)), 5)
    blocked = asyncio.create_task(publisher.publish(Envelope("cam", "s", 10), caption_of(100_000)))
    await asyncio.sleep(1.0)
    assert not blocked.done() and publisher.waiting == 10
    await asyncio.to_thread(server.start)
    await asyncio.wait_for(blocked, 30)
    assert await publisher.close() == 0
    events = await stored_events(server.url, "MB")
    assert [e["seq"] for e in events] == list(range(11))
    server.stop()
    forgive_oversized_captions(events_match_published_schemas)
