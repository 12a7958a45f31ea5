"""The autouse schema check in conftest fails a test whose pipeline publishes an event that
breaks the published schemas (README: "a test validates every event the tests produce")."""

from __future__ import annotations

import time

from stream.config import NatsConfig
from stream.delivery.events import Envelope, StatusEvent
from stream.delivery.nats_server import EmbeddedNatsServer
from stream.delivery.publisher import EventPublisher, connect


async def test_an_event_breaking_its_schema_is_caught_on_the_publishers_path(
    nats_server: EmbeddedNatsServer, events_match_published_schemas: list[str]
) -> None:
    config = NatsConfig(url=nats_server.url, subject_prefix="check", jetstream=False)
    publisher = EventPublisher(await connect(config, nats_server.url), config)
    await publisher.publish(Envelope("cam", "s1", 0), StatusEvent("live", "fine", time.time()))
    assert events_match_published_schemas == []
    # keyframes_dropped must say how many were dropped: this one does not.
    bad = StatusEvent("keyframes_dropped", "engine behind", time.time())
    await publisher.publish(Envelope("cam", "s1", 1), bad)
    assert await publisher.close() == 0
    assert len(events_match_published_schemas) == 1
    assert "dropped" in events_match_published_schemas[0]
    events_match_published_schemas.clear()  # seen: the check works; let teardown pass
