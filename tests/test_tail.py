"""`vidcap tail` against a real nats-server: readable lines, raw JSON, stream filter."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import orjson

from stream.config import NatsConfig
from stream.nats_server import EmbeddedNatsServer
from stream.publisher import EventPublisher, connect
from stream.tail import format_event


def status(stream: str, seq: int, state: str) -> dict:
    return {
        "type": "status",
        "stream": stream,
        "session": "s",
        "seq": seq,
        "state": state,
        "detail": "why",
        "at": "2026-11-25T00:00:00+00:00",
    }


async def start_tail(url: str, *args: str) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "stream.cli",
        "tail",
        "--nats",
        url,
        "--prefix",
        "tl",
        *args,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert process.stdout is not None
    banner = await asyncio.wait_for(process.stdout.readline(), 30)
    assert b"listening on" in banner
    return process


async def test_tail_prints_filtered_events(nats_server: EmbeddedNatsServer) -> None:
    raw = await start_tail(nats_server.url, "--json", "--stream", "cam1")
    readable = await start_tail(nats_server.url)
    config = NatsConfig(url=nats_server.url, subject_prefix="tl", jetstream=False)
    publisher = EventPublisher(await connect(config, nats_server.url), config)
    await publisher.publish(status("cam2", 0, "live"))
    await publisher.publish(status("cam1", 0, "connecting"))
    await publisher.close()
    assert raw.stdout is not None and readable.stdout is not None
    line = await asyncio.wait_for(raw.stdout.readline(), 10)
    assert orjson.loads(line) == status("cam1", 0, "connecting")  # cam2 filtered out
    lines = [await asyncio.wait_for(readable.stdout.readline(), 10) for _ in range(2)]
    assert [x.decode().strip() for x in lines] == [
        format_event(status("cam2", 0, "live")),
        "cam1 #0 status  connecting: why",
    ]
    for process in (raw, readable):
        process.terminate()
        await process.wait()
