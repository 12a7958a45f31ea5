"""Publishing to a real nats-server: subjects, payloads, JetStream de-duplication."""

from __future__ import annotations

import asyncio

import nats
import orjson
import pytest
from nats.aio.msg import Msg

from stream.config import ConfigError, NatsConfig
from stream.delivery.events import Envelope, StatusEvent
from stream.delivery.nats_server import EmbeddedNatsServer
from stream.delivery.publisher import EventPublisher, connect


def event(seq: int, stream: str = "cam1") -> tuple[Envelope, StatusEvent]:
    return Envelope(stream, "s1", seq), StatusEvent("live", "", 1764079323.12)


async def test_jetstream_stores_a_republished_event_once(nats_server: EmbeddedNatsServer) -> None:
    config = NatsConfig(url=nats_server.url, subject_prefix="t1", stream_name="T1")
    publisher = EventPublisher(await connect(config, nats_server.url), config)
    await publisher.ensure_stream()
    await publisher.ensure_stream()  # idempotent
    for seq in range(3):
        await publisher.publish(*event(seq))
    await publisher.publish(*event(1))  # a retry of an event already stored
    assert await publisher.flush(10)
    assert publisher.duplicates == 1

    client = await nats.connect(nats_server.url)
    js = client.jetstream()
    info = await js.stream_info("T1")
    assert info.state.messages == 3
    subscription = await js.subscribe("t1.cam1.status", ordered_consumer=True)
    stored = [orjson.loads((await subscription.next_msg(timeout=2)).data)["seq"] for _ in range(3)]
    assert stored == [0, 1, 2]
    message = await js.get_msg("T1", 2)
    assert message.headers is not None
    assert message.headers["Nats-Msg-Id"] == event(1)[0].msg_id == "cam1:s1:1"
    await client.close()
    await publisher.close()


async def test_core_nats_publishing_without_jetstream(nats_server: EmbeddedNatsServer) -> None:
    config = NatsConfig(url=nats_server.url, subject_prefix="t2", jetstream=False)
    client = await nats.connect(nats_server.url)
    received: asyncio.Queue[tuple[str, dict]] = asyncio.Queue()

    async def on_message(msg: Msg) -> None:
        await received.put((msg.subject, orjson.loads(msg.data)))

    await client.subscribe("t2.>", cb=on_message)
    await client.flush()
    publisher = EventPublisher(await connect(config, nats_server.url), config)
    await publisher.ensure_stream()  # no-op without JetStream
    await publisher.publish(*event(0, stream="cam-2"))
    subject, payload = await asyncio.wait_for(received.get(), 5)
    assert subject == "t2.cam-2.status" and payload["seq"] == 0
    await publisher.close()
    await client.close()


def test_embedded_server_binds_loopback_on_a_random_port(tmp_path) -> None:
    with EmbeddedNatsServer(tmp_path) as first, EmbeddedNatsServer(tmp_path / "b") as second:
        assert first.url.startswith("nats://127.0.0.1:")
        assert first.url != second.url


async def test_a_stream_jetstream_refuses_is_a_config_error(
    nats_server: EmbeddedNatsServer,
) -> None:
    """Another stream already stores vidcap.>: a 40-line traceback and exit 1 (a trial); now
    one message naming the settings (exit 2)."""
    client = await nats.connect(nats_server.url)
    await client.jetstream().add_stream(name="OTHER", subjects=["vidcap.>"])
    config = NatsConfig(url=nats_server.url, stream_name="VIDCAPAPI")
    publisher = EventPublisher(client, config)
    with pytest.raises(ConfigError, match="subjects overlap") as refused:
        await publisher.ensure_stream()
    assert "nats.stream_name 'VIDCAPAPI'" in str(refused.value)
    await client.close()
