"""A NATS outage longer than the lease is not a handover (a trial's finding): one `vidcap run`
with a lease (`nats.url` set) and nobody else; nats-server is SIGKILLed for 1.5 lease TTLs and
restarted on its store. vidcap called the lease "taken: it expired", dropped the captions made
meanwhile (they had been printed as published), stopped the stream and started it over as a
new session that "resumed" after a vidcap that had not died. Now the events wait while the
lease is in question, the lease is taken again (free, and nobody wrote the stream), and the
story goes on: one session, no seq or keyframe missing.

Real parts: vidcap, nats-server (JetStream on disk), the looped file, the suite's `vllm serve`
as the engine (kind openai: captioning does not need NATS, so it goes on during the outage)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import orjson

from stream.delivery.nats_server import EmbeddedNatsServer
from stream.sample_clip import ClipSpec, write_clip
from tests.conftest import free_port
from tests.test_standby import wait_for
from tests.test_story_across_runs import captions_stored, stored_events

TTL_S = 3.0
OUTAGE_S = 1.5 * TTL_S


async def test_a_nats_outage_longer_than_the_lease_loses_and_restarts_nothing(
    tmp_path: Path, vllm_server: str
) -> None:
    server = EmbeddedNatsServer(tmp_path / "nats", port=free_port())
    server.start()
    clip = write_clip(tmp_path / "clip.mp4", ClipSpec(shots=6, shot_frames=15, fps=25))
    config = tmp_path / "vidcap.yaml"
    settings = {
        "streams": [{"id": "lobby", "url": str(clip), "loop": True}],
        "keyframes": {"min_gap_s": 0.2},
        "engine": {"kind": "openai", "url": vllm_server, "model": "tiny-gemma3"},
        "nats": {"url": server.url, "subject_prefix": "story", "stream_name": "STORY"},
        "leases": {"ttl_s": TTL_S},
        "spool": {"path": str(tmp_path / "spool")},
    }
    config.write_bytes(orjson.dumps(settings))
    log = tmp_path / "vidcap.log"
    command = [sys.executable, "-m", "stream.cli", "run", "--quiet", "--config", str(config)]
    with log.open("wb") as output:
        vidcap = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)  # noqa: ASYNC220
    try:
        await wait_for(lambda: has_more_captions(server.url, 1), 90)
        before = await captions_stored(server.url)
        os.kill(server.pid, signal.SIGKILL)
        server.stop()
        await asyncio.sleep(OUTAGE_S)
        server.start()
        await wait_for(lambda: has_more_captions(server.url, before + 3), 60)
        vidcap.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(vidcap.wait, 60) == 0
        events = await stored_events(server.url, "STORY")
    finally:
        if vidcap.poll() is None:
            vidcap.kill()
        server.stop()
    said = log.read_text()
    assert [e["seq"] for e in events] == list(range(len(events)))
    assert len({e["session"] for e in events}) == 1, said[-3000:]  # not started over
    assert not [e for e in events if e["type"] == "status" and e["state"] == "resumed"]
    keyframes = [e["keyframe"] for e in events if e["type"] == "caption"]
    assert keyframes == list(range(len(keyframes)))  # none captioned meanwhile was lost
    assert events[-1]["state"] == "stopped" and "shutdown" in events[-1]["detail"]
    assert "lease lost" not in said and "Traceback" not in said, said[-3000:]
    # The outage was long enough to matter: the lease was in question, then renewed.
    assert "lease not renewed for" in said and "lease renewed; its waiting events go" in said


async def has_more_captions(url: str, count: int) -> bool:
    return await captions_stored(url) >= count
