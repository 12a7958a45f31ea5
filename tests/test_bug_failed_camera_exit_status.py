"""A README promise the code broke, found for issue 13, now fixed: a stream whose source
gave up counts as stopped with an error.

README: "Exit status 1 means a stream stopped with an error (logged)". A camera that fails for
good (a missing file, or a refusing camera after ``reconnect_max_attempts``) publishes
``failed`` and logs a warning, but ``vidcap run`` exits 0: the pipeline ends normally after a
``failed`` source status, so ``Runner._failed`` never hears of it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from stream.config import parse_config
from stream.delivery.nats_server import EmbeddedNatsServer
from stream.runner import Runner
from tests.conftest import engine_and_nats, free_port
from tests.test_exit_status import GoodEngine, clip

__all__ = ["clip"]  # the module-scoped fixture, shared


@pytest.mark.parametrize("camera", ["missing file", "refusing camera"])
async def test_a_failed_camera_exits_1(
    camera: str, clip: Path, tmp_path: Path, nats_server: EmbeddedNatsServer
) -> None:
    failing = (
        {"id": "bad", "url": str(tmp_path / "no-such-file.mp4")}
        if camera == "missing file"
        else {
            "id": "bad",
            "url": f"rtsp://127.0.0.1:{free_port()}/cam",
            "reconnect_initial_s": 0.05,
            "reconnect_max_attempts": 1,
        }
    )
    config = parse_config(
        {
            "streams": [{"id": "ok", "url": str(clip)}, failing],
            **engine_and_nats(nats_server.url, "x1"),
        }
    )
    states: list[str] = []
    said: list[str] = []
    runner = Runner(config, lambda e: states.append(e.get("state", "")), announce=said.append)
    status = await asyncio.wait_for(runner.run(nats_server.url, engine=GoodEngine()), 60)
    assert "failed" in states  # the camera did fail ...
    assert status == 1  # ... and README: "1 means a stream stopped with an error"
    assert said[-1] == "exit status 1: stream(s) failed: bad"  # the last line says which


async def test_a_failed_camera_removed_through_the_api_is_not_a_failure_at_the_end(
    clip: Path, tmp_path: Path, nats_server: EmbeddedNatsServer
) -> None:
    """The operator saw it fail and removed it: the run's end is not an error for it."""
    config = parse_config(
        {
            "streams": [{"id": "bad", "url": str(tmp_path / "no-such-file.mp4")}],
            "http": {"listen": "127.0.0.1:0", "token": "exit-status-token-0123"},  # until stopped
            **engine_and_nats(nats_server.url, "x2"),
        }
    )
    states: list[str] = []
    said: list[str] = []
    runner = Runner(config, lambda e: states.append(e.get("state", "")), announce=said.append)
    running = asyncio.create_task(runner.run(nats_server.url, engine=GoodEngine()))
    async with asyncio.timeout(30):
        while "failed" not in states:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    assert await runner.remove("bad") is False  # it had ended with an error
    runner.request_stop()
    assert await asyncio.wait_for(running, 30) == 0, said
    assert not [line for line in said if line.startswith("exit status")]
