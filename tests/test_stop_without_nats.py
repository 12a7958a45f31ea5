"""A stop while NATS is away waits `nats.flush_timeout_s` for delivery once (a trial's
finding: it waited twice, with the engine's close in between, 75 s for a 30 s setting, past
Compose's 60 s grace), then says how many events were not delivered and exits 1.

Real parts: the runner, nats-server (SIGKILLed), the looped file; the engine is the fixed
stand-in of test_nats_permissions (the shutdown's delivery is under test, not the model)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from stream.config import parse_config
from stream.delivery.nats_server import EmbeddedNatsServer
from stream.runner import Runner
from stream.sample_clip import ClipSpec, write_clip
from tests.test_nats_permissions import FixedEngine
from tests.test_standby import wait_for

FLUSH_TIMEOUT_S = 3.0


# With leases (the default with NATS), each stream's hand-over waited too, then its release
# and the presence's leave on the dead connection: 27 s for a 5 s setting in a trial.
@pytest.mark.parametrize("leases", [False, True])
async def test_a_stop_with_nats_gone_waits_for_delivery_once(
    leases: bool, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = EmbeddedNatsServer(tmp_path / "nats")
    server.start()
    clip = write_clip(tmp_path / "clip.mp4", ClipSpec(shots=6, shot_frames=15, fps=25))
    config = parse_config(
        {
            "streams": [{"id": "lobby", "url": str(clip), "loop": True}],
            "keyframes": {"min_gap_s": 0.2},
            "nats": {"url": server.url, "flush_timeout_s": FLUSH_TIMEOUT_S},
            "leases": {"enabled": leases},
        }
    )
    events: list[dict[str, Any]] = []
    runner = Runner(config, events.append)
    running = asyncio.create_task(runner.run(server.url, FixedEngine()))
    try:
        await wait_for(lambda: _captioned(events, 2), 30)
        os.kill(server.pid, signal.SIGKILL)
        server.stop()
        made = sum(e["type"] == "caption" for e in events)
        await wait_for(lambda: _captioned(events, made + 2), 30)  # captions go on
        stopped_at = time.monotonic()
        runner.request_stop()
        status = await asyncio.wait_for(running, 30)
        took = time.monotonic() - stopped_at
    finally:
        runner.request_stop()
        await asyncio.gather(running, return_exceptions=True)
    assert status == 1
    assert FLUSH_TIMEOUT_S <= took < 1.6 * FLUSH_TIMEOUT_S, took
    assert "could not be delivered to NATS within 3 s" in caplog.text
    # Stopped means stopped: no connection of the run goes on trying to reach NATS (one did,
    # forever, in the processes that embed a runner: the test suite's own logs showed it).
    tries = caplog.text.count("NATS error")
    await asyncio.sleep(5)  # more than nats-py's 2 s between tries
    assert caplog.text.count("NATS error") == tries
    caplog.clear()


async def _captioned(events: list[dict[str, Any]], count: int) -> bool:
    return sum(e["type"] == "caption" for e in events) >= count
