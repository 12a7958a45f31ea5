"""Events produced before vidcap is SIGKILLed are delivered once, in order, by the next run:
some stored by JetStream with their acks lost, the rest never sent (NATS away). The
publishing process, nats-server and the TCP relay between them are real, on 127.0.0.1."""

from __future__ import annotations

import asyncio
import errno
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from stream.config import NatsConfig, SpoolConfig, parse_config
from stream.delivery.events import Envelope, StatusEvent
from stream.delivery.nats_server import EmbeddedNatsServer
from stream.delivery.publisher import EventPublisher, connect
from stream.delivery.spool import open_spool
from stream.runner import Runner
from tests.test_story_across_runs import AckEater, stored_events

STORED_UNACKED = 300
NEVER_SENT = 300

PRODUCER = """
import asyncio, sys
from pathlib import Path
from stream.config import NatsConfig, SpoolConfig, parse_config
from stream.delivery.events import Envelope, StatusEvent
from stream.delivery.publisher import EventPublisher, connect
from stream.delivery.spool import open_spool
from stream.runner import Runner

async def main(url, root, batches):
    config = NatsConfig(url=url, subject_prefix="crash", stream_name="CRASH", ack_timeout_s=1)
    spool, _ = open_spool(Path(root), SpoolConfig())
    spool.start()
    publisher = EventPublisher(await connect(config, url), config, spool=spool)
    print("connected", flush=True)
    seq = 0
    for batch in batches:
        await asyncio.to_thread(sys.stdin.readline)  # the test has set the relay for it
        for seq in range(seq, seq + batch):
            await publisher.publish(Envelope("cam", "first", seq), StatusEvent("live", "x", 1e9))
        print(seq, flush=True)
        seq += 1
    await asyncio.sleep(3600)  # killed here

batches = [int(n) for n in sys.argv[3].split(",")]
asyncio.run(main(sys.argv[1], sys.argv[2], batches))
"""


async def read_until(process: subprocess.Popen[bytes], line: bytes) -> None:
    assert process.stdout is not None
    while (await asyncio.to_thread(process.stdout.readline)).strip() != line:
        assert process.poll() is None, "the producer died"


async def next_batch(process: subprocess.Popen[bytes], last_seq: int) -> None:
    assert process.stdin is not None
    process.stdin.write(b"go\n")
    process.stdin.flush()
    await read_until(process, str(last_seq).encode())


async def test_sigkill_with_events_unacked_and_unsent_loses_and_repeats_nothing(
    tmp_path: Path,
) -> None:
    server = EmbeddedNatsServer(tmp_path / "nats")
    server.start()
    config = NatsConfig(url=server.url, subject_prefix="crash", stream_name="CRASH")
    setup = EventPublisher(await connect(config, server.url), config)
    await setup.ensure_stream()
    await setup.close()
    relay = AckEater(int(server.url.rsplit(":", 1)[1]))
    await relay.start()
    root = tmp_path / "spool"
    total = STORED_UNACKED + NEVER_SENT
    relayed = f"nats://127.0.0.1:{relay.port}"
    batches = f"{STORED_UNACKED},{NEVER_SENT}"
    producer = subprocess.Popen(  # noqa: ASYNC220
        [sys.executable, "-c", PRODUCER, relayed, str(root), batches],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        await read_until(producer, b"connected")
        relay.swallow = True  # the server stores, the producer never hears so
        await next_batch(producer, STORED_UNACKED - 1)
        async with asyncio.timeout(20):
            while len(await stored_events(server.url, "CRASH")) < STORED_UNACKED:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        await relay.cut()  # NATS away: the rest stays in the producer
        await next_batch(producer, total - 1)
        producer.send_signal(signal.SIGKILL)
        producer.wait(10)
        assert len(await stored_events(server.url, "CRASH")) == STORED_UNACKED

        spool, recovery = open_spool(root, SpoolConfig())
        assert [e.seq for e in recovery.events] == list(range(total))
        assert recovery.corrupt == []
        publisher = EventPublisher(await connect(config, server.url), config, spool=spool)
        await asyncio.wait_for(publisher.deliver_spooled(recovery), 30)
        assert publisher.found_stored == STORED_UNACKED  # looked up, not sent again
        assert await publisher.close() == 0
        events = await stored_events(server.url, "CRASH")
        after, _ = open_spool(root, SpoolConfig())
        await after.close()
    finally:
        if producer.poll() is None:
            producer.kill()
        server.stop()
    assert [(e["session"], e["seq"]) for e in events] == [("first", s) for s in range(total)]
    assert after.events == 0 and list(after.directory.glob("*.spool")) == []


async def test_a_spool_that_cannot_be_written_turns_off_and_delivery_goes_on(
    nats_server: EmbeddedNatsServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A full disk, made by a write that fails with ENOSPC: a real one needs a mount this
    # unprivileged test cannot make.
    config = NatsConfig(url=nats_server.url, subject_prefix="full", stream_name="FULL")
    spool, _ = open_spool(tmp_path / "spool", SpoolConfig())
    publisher = EventPublisher(await connect(config, nats_server.url), config, spool=spool)
    await publisher.ensure_stream()

    def disk_full(data: bytes) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    for seq in range(6):
        if seq == 3:
            spool._file.write = disk_full  # type: ignore[method-assign,union-attr]
        await publisher.publish(Envelope("cam", "s", seq), StatusEvent("live", "x", 1e9))
    assert publisher.spool_failure is not None and "No space left" in publisher.spool_failure
    assert await publisher.close() == 0
    events = await stored_events(nats_server.url, "FULL")
    assert [e["seq"] for e in events] == list(range(6))
    assert any("the spool is off" in r.getMessage() for r in caplog.records)
    caplog.clear()  # the ERROR was expected


async def test_readiness_names_a_failed_spool(nats_server: EmbeddedNatsServer) -> None:
    config = parse_config(
        {"streams": [{"id": "cam", "url": "clip.mp4"}], "nats": {"url": nats_server.url}}
    )
    runner = Runner(config)
    client = await connect(config.nats, nats_server.url)
    publisher = EventPublisher(client, config.nats)
    await publisher.ensure_stream()
    runner._client, runner._publisher, runner._engine_loaded = client, publisher, True
    publisher.spool_failure = "cannot write the spool in /x: No space left on device"
    reasons = await runner.not_ready()
    await publisher.close()
    assert any("the spool failed" in r and "No space left" in r for r in reasons), reasons
