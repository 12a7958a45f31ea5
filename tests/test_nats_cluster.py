"""vidcap on a three-node NATS cluster with JetStream at three replicas: the events stream and
the fleet's buckets are created with `nats.replicas: 3`, and SIGKILL of the events stream's
leader while events flow loses, repeats and reorders nothing. Three real nats-servers, routed
on 127.0.0.1."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import nats
import nats.errors
import nats.js.errors
import pytest

from stream.config import NatsConfig
from stream.delivery.events import Envelope, StatusEvent
from stream.delivery.nats_server import EmbeddedNatsServer
from stream.delivery.publisher import EventPublisher, connect
from stream.fleet.fleet import Fleet
from tests.conftest import free_port
from tests.test_outbox import stored_events

NODES = 3
STREAMS = 4
EVENTS = 1200


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[list[EmbeddedNatsServer]]:
    routes = [free_port() for _ in range(NODES)]
    servers = []
    for n in range(NODES):
        folder = tmp_path / f"n{n}"
        folder.mkdir()
        others = ", ".join(f"nats-route://127.0.0.1:{p}" for i, p in enumerate(routes) if i != n)
        config = folder / "server.conf"
        config.write_text(
            f"server_name: n{n}\n"
            f"cluster {{ name: vidcap-test, listen: 127.0.0.1:{routes[n]}, routes: [{others}] }}\n"
        )
        servers.append(EmbeddedNatsServer(folder, port=free_port(), config_file=config))
    for server in servers:
        server.start()
    yield servers
    for server in servers:
        server.stop()


async def jetstream_ready(url: str) -> None:
    """Wait until the cluster has elected its JetStream meta leader."""
    client = await nats.connect(url)
    try:
        async with asyncio.timeout(30):
            while True:
                try:
                    await client.jetstream(timeout=2).account_info()
                    return
                except (nats.errors.Error, TimeoutError):
                    await asyncio.sleep(0.2)
    finally:
        await client.close()


async def test_replicated_events_survive_the_stream_leaders_death(
    cluster: list[EmbeddedNatsServer],
) -> None:
    url = ",".join(server.url for server in cluster)
    await jetstream_ready(cluster[0].url)
    config = NatsConfig(url=url, subject_prefix="cl", stream_name="CL", replicas=3, ack_timeout_s=2)
    publisher = EventPublisher(await connect(config, url), config)
    await publisher.ensure_stream()
    js = publisher._client.jetstream()
    info = await js.stream_info("CL")
    assert info.config.num_replicas == 3
    fleet = Fleet(js, "CL", 5.0, "node-a", "s1", replicas=3)
    await fleet.join()
    for bucket in ("KV_CL_LEASES", "KV_CL_NODES"):
        assert (await js.stream_info(bucket)).config.num_replicas == 3

    leader = info.cluster.leader if info.cluster else None
    victim = next(s for n, s in enumerate(cluster) if f"n{n}" == leader)
    for n in range(EVENTS):
        if n == EVENTS // 3:
            victim.kill()  # the stream's leader, while events are in flight
        seq, stream = divmod(n, STREAMS)
        await publisher.publish(Envelope(f"cam{stream}", "s1", seq), StatusEvent("live", "x", 1e9))
        if n % 50 == 0:
            await asyncio.sleep(0)
    assert await asyncio.wait_for(publisher.flush(60), 90)
    print(f"leader {leader} killed: {publisher.found_stored} found stored on resend")
    await fleet.presence.leave()
    survivor = next(s for s in cluster if s is not victim)
    async with asyncio.timeout(60):  # the new leader may still be settling: ask again
        while True:
            try:
                events = await stored_events(survivor.url, "CL")
                break
            except (nats.errors.TimeoutError, TimeoutError):
                await asyncio.sleep(0.5)
    await publisher.close()
    for stream in range(STREAMS):
        seqs = [e["seq"] for e in events if e["stream"] == f"cam{stream}"]
        assert seqs == list(range(EVENTS // STREAMS)), stream  # none lost, repeated, reordered
    new_leader = await stored_leader(survivor.url)
    assert new_leader not in (None, leader), new_leader  # another took over


async def stored_leader(url: str) -> str | None:
    client = await nats.connect(url)
    try:
        info = await client.jetstream().stream_info("CL")
        return info.cluster.leader if info.cluster else None
    finally:
        await client.close()
