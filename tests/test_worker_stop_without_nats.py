"""A `vidcap worker` told to stop while NATS is away still closes its engine and returns
(a drain of the dead connection raised, the engine's close was skipped and the NATS client
went on reconnecting). nats-server is real and SIGKILLed; the engine is the fixed stand-in of
test_nats_permissions with a close that is counted (the worker's stop is under test, not the
model); the stop is the SIGTERM its signal handler takes."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from stream import worker
from stream.config import NatsConfig, WorkerConfig
from stream.delivery.nats_server import EmbeddedNatsServer
from tests.test_nats_permissions import FixedEngine


class ClosedEngine(FixedEngine):
    closed = False

    async def close(self) -> None:
        self.closed = True


async def test_a_worker_stopped_with_nats_gone_closes_its_engine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    server = EmbeddedNatsServer(tmp_path / "nats")
    server.start()
    engine = ClosedEngine()

    async def fixed_engine(_: object) -> ClosedEngine:
        return engine

    monkeypatch.setattr(worker, "start_engine", fixed_engine)
    said: list[str] = []
    config = WorkerConfig(nats=NatsConfig(url=server.url))
    serving = asyncio.create_task(worker.run_worker(config, said.append))
    try:
        async with asyncio.timeout(10):
            while not any(line.startswith("serving") for line in said):  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        os.kill(server.pid, signal.SIGKILL)
        server.stop()
        await asyncio.sleep(0.5)
        os.kill(os.getpid(), signal.SIGTERM)  # the worker's handler takes it
        status = await asyncio.wait_for(serving, 15)
    finally:
        serving.cancel()
    assert status == 0 and engine.closed
    tries = caplog.text.count("NATS error")
    await asyncio.sleep(3)  # more than nats-py's 2 s between tries
    assert caplog.text.count("NATS error") == tries
