"""A NATS outage longer than the lease is not a handover (a trial's finding): one `vidcap run`
with a lease (`nats.url` set) and nobody else; nats-server is SIGKILLed for 1.5 lease TTLs and
restarted on its store. vidcap called the lease "taken: it expired", dropped the captions made
meanwhile (they had been printed as published), stopped the stream and started it over as a
new session that "resumed" after a vidcap that had not died. Now the events wait while the
lease is in question, the lease is taken again (free, and nobody wrote the stream), and the
story goes on: one session, no seq or keyframe missing.

Real parts: the runner, nats-server (JetStream on disk), the looped file; the engine is the
fixed stand-in of test_nats_permissions (captioning must not need NATS here, as vLLM in the
process does not)."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from stream.config import SpoolConfig, parse_config
from stream.delivery.nats_server import EmbeddedNatsServer
from stream.runner import Runner
from stream.sample_clip import ClipSpec, write_clip
from tests.conftest import free_port
from tests.test_nats_permissions import FixedEngine
from tests.test_standby import wait_for
from tests.test_story_across_runs import captions_stored, stored_events

TTL_S = 2.0
OUTAGE_S = 1.5 * TTL_S


@pytest.mark.parametrize("standby", [False, True])
async def test_a_nats_outage_longer_than_the_lease_loses_and_restarts_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, standby: bool
) -> None:
    """With a standby too (a second trial): its own connection came back with the owner's and
    it took the stream, whose owner had lived all along ("interrupted (vidcap died)"); the
    owner's captions made meanwhile were dropped. A race: here the owner (renewing every
    tenth of the TTL) mostly won it on the old code too; the trial, at TTL 10 s, lost it."""
    server = EmbeddedNatsServer(tmp_path / "nats", port=free_port())
    server.start()
    clip = write_clip(tmp_path / "clip.mp4", ClipSpec(shots=6, shot_frames=15, fps=25))
    config = parse_config(
        {
            "streams": [{"id": "lobby", "url": str(clip), "loop": True}],
            "keyframes": {"min_gap_s": 0.2},
            "pipeline": {"max_in_flight_per_stream": 1},
            "nats": {"url": server.url, "subject_prefix": "story", "stream_name": "STORY"},
            "leases": {"ttl_s": TTL_S},
            "spool": {"path": str(tmp_path / "spool")},
        }
    )
    runner = Runner(config)
    running = asyncio.create_task(runner.run(server.url, SlowFixedEngine()))
    runners = [(runner, running)]
    try:
        await wait_for(lambda: has_more_captions(server.url, 1), 30)
        if standby:
            second = Runner(config.model_copy(update={"spool": SpoolConfig(path=tmp_path / "b")}))
            runners.append((second, asyncio.create_task(second.run(server.url, FixedEngine()))))
            await asyncio.sleep(TTL_S)  # it stands by
        before = await captions_stored(server.url)
        os.kill(server.pid, signal.SIGKILL)
        server.stop()
        await asyncio.sleep(OUTAGE_S)
        server.start()
        await wait_for(lambda: has_more_captions(server.url, before + 3), 30)
        await asyncio.sleep(TTL_S if standby else 0)  # a standby would have taken it by now
        for each, run in reversed(runners):
            each.request_stop()
            assert await run == 0
        events = await stored_events(server.url, "STORY")
    finally:
        for each, run in runners:
            each.request_stop()
            await asyncio.gather(run, return_exceptions=True)
        server.stop()
    said = caplog.text
    assert [e["seq"] for e in events] == list(range(len(events)))
    assert len({e["session"] for e in events}) == 1, said[-3000:]  # not started over
    assert not [e for e in events if e["type"] == "status" and e["state"] == "resumed"]
    keyframes = [e["keyframe"] for e in events if e["type"] == "caption"]
    assert keyframes == list(range(len(keyframes)))  # none captioned meanwhile was lost
    assert events[-1]["state"] == "stopped" and "shutdown" in events[-1]["detail"]
    assert "lease lost" not in said, said[-3000:]
    # The outage was long enough to matter: the lease was in question, then renewed.
    assert "lease not renewed for" in said and "lease renewed; its waiting events go" in said


class SlowFixedEngine(FixedEngine):
    """A caption takes a while (as a model's does), so the looped file is not read through
    thousands of times during the outage."""

    async def generate(self, *args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(0.1)
        return await super().generate(*args, **kwargs)


async def has_more_captions(url: str, count: int) -> bool:
    return await captions_stored(url) >= count
