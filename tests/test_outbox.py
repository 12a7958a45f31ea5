"""The outbox against a real nats-server that is killed and restarted: nothing lost,
nothing stored twice, nothing out of order; and what a full outbox does."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fastjsonschema
import nats
import orjson
import pytest

from stream.config import NatsConfig
from stream.delivery.events import Envelope, StatusEvent
from stream.delivery.nats_server import EmbeddedNatsServer
from stream.delivery.publisher import EventPublisher, connect
from stream.delivery.schemas import EVENT_SCHEMAS
from tests.conftest import free_port

VALIDATE = {name.split("-")[0]: fastjsonschema.compile(s) for name, s in EVENT_SCHEMAS.items()}


def status(stream: str, seq: int) -> tuple[Envelope, StatusEvent]:
    return Envelope(stream, "s1", seq), StatusEvent("live", f"event {seq}", 1764079323.12)


@pytest.fixture
def restartable(tmp_path: Path) -> Iterator[EmbeddedNatsServer]:
    server = EmbeddedNatsServer(tmp_path / "nats", port=free_port())
    server.start()
    yield server
    server.stop()


async def stored_events(url: str, stream_name: str) -> list[dict[str, Any]]:
    client = await nats.connect(url)
    js = client.jetstream()
    count = (await js.stream_info(stream_name)).state.messages
    subscription = await js.subscribe(">", ordered_consumer=True, stream=stream_name)
    events = [orjson.loads((await subscription.next_msg(timeout=5)).data) for _ in range(count)]
    await client.close()
    return events


async def test_kill_and_restart_nats_twice_while_publishing(
    restartable: EmbeddedNatsServer,
) -> None:
    config = NatsConfig(url=restartable.url, subject_prefix="ob", stream_name="OB", ack_timeout_s=1)
    publisher = EventPublisher(await connect(config, restartable.url), config)
    await publisher.ensure_stream()
    streams, per_stream = ("cam1", "cam2"), 600

    async def produce(stream: str) -> None:
        for seq in range(per_stream):
            await publisher.publish(*status(stream, seq))
            await asyncio.sleep(0.004)  # about 250 events/s per stream, for ~2.5 s

    producers = [asyncio.create_task(produce(s)) for s in streams]
    for _ in range(2):
        await asyncio.sleep(0.6)
        restartable.kill()
        await asyncio.sleep(0.5)  # captioning (here: producing) goes on meanwhile
        assert publisher.waiting > 0
        await asyncio.to_thread(restartable.start)
    await asyncio.gather(*producers)
    assert await publisher.flush(30)
    assert await publisher.close() == 0

    events = await stored_events(restartable.url, "OB")
    for stream in streams:
        seqs = [e["seq"] for e in events if e["stream"] == stream]
        assert seqs == list(range(per_stream)), stream  # gap-free, no duplicate, in order
    for event in events:
        VALIDATE["status"](event)


async def test_full_outbox_blocks_until_nats_is_back(restartable: EmbeddedNatsServer) -> None:
    config = NatsConfig(
        url=restartable.url,
        subject_prefix="bl",
        stream_name="BL",
        ack_timeout_s=0.5,
        outbox_size=20,
    )
    publisher = EventPublisher(await connect(config, restartable.url), config)
    await publisher.ensure_stream()
    restartable.kill()
    for seq in range(20):
        await publisher.publish(*status("cam", seq))
    blocked = asyncio.create_task(publisher.publish(*status("cam", 20)))
    await asyncio.sleep(1.0)
    assert not blocked.done()  # the 21st waits for room
    await asyncio.to_thread(restartable.start)
    await asyncio.wait_for(blocked, 30)
    assert await publisher.close() == 0
    events = await stored_events(restartable.url, "BL")
    assert [e["seq"] for e in events] == list(range(21))


async def test_full_outbox_drops_oldest_and_says_so_in_their_place(
    restartable: EmbeddedNatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    config = NatsConfig(
        url=restartable.url,
        subject_prefix="dr",
        stream_name="DR",
        ack_timeout_s=0.5,
        outbox_size=5,
        outbox_full="drop_oldest",
    )
    publisher = EventPublisher(await connect(config, restartable.url), config)
    await publisher.ensure_stream()
    restartable.kill()
    await asyncio.sleep(0.2)
    for seq in range(12):
        await publisher.publish(*status("cam", seq))
    await asyncio.to_thread(restartable.start)
    assert await publisher.close() == 0
    caplog.clear()  # the drop is logged as an error, as it should be

    events = await stored_events(restartable.url, "DR")
    for event in events:
        VALIDATE["status"](event)
    dropped = [e for e in events if e["state"] == "events_dropped"]
    assert len(dropped) == 1 and dropped[0]["seq"] == 0 and dropped[0]["last_seq"] == 6
    assert dropped[0]["dropped"] == 7
    assert [e["seq"] for e in events] == [0, 7, 8, 9, 10, 11]  # every seq accounted for once
    assert publisher.dropped == 7
