"""Two `vidcap run`s with the same four streams share them through leases and presence: the
first takes all four; the second joins and takes its share (two) as the first hands over;
SIGKILL of the second: a presence watcher sees it go offline within the stated time, and the
first takes its streams back; every stream's seq runs on across the owners. The vidcaps,
nats-server and the looped file are real, on 127.0.0.1; the caption engine is a worker in this
process (as in test_story_across_runs)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import nats
import nats.js.errors
import orjson

from stream.delivery.nats_server import EmbeddedNatsServer
from stream.fleet.presence import presence_bucket
from stream.sample_clip import ClipSpec, write_clip
from tests.conftest import kill_tree
from tests.test_standby import wait_for
from tests.test_story_across_runs import stored_events, worker_for

TTL_S = 3.0
STREAMS = ["cam1", "cam2", "cam3", "cam4"]
OFFLINE_WITHIN_S = TTL_S + 2.0
"""Presence promise: a killed vidcap's key expires after the TTL; the server's expiry check
adds up to a second or so."""


async def presence(url: str) -> dict[str, dict[str, Any]]:
    client = await nats.connect(url)
    try:
        try:
            kv = await client.jetstream().key_value(presence_bucket("STORY"))
            keys = await kv.keys()
        except (nats.js.errors.BucketNotFoundError, nats.js.errors.NoKeysError):
            return {}  # no vidcap yet, or none left
        return {key: orjson.loads((await kv.get(key)).value or b"{}") for key in keys}
    finally:
        await client.close()


def owned(nodes: dict[str, dict[str, Any]]) -> list[int]:
    return sorted(len(node["owned"]) for node in nodes.values())


async def test_two_vidcaps_share_four_streams_and_take_a_dead_ones_back(tmp_path: Path) -> None:
    server = EmbeddedNatsServer(tmp_path / "nats")
    server.start()
    clip = write_clip(tmp_path / "clip.mp4", ClipSpec(shots=6, shot_frames=15, fps=25))
    config = tmp_path / "vidcap.yaml"
    settings = {
        "streams": [{"id": name, "url": str(clip), "loop": True} for name in STREAMS],
        "keyframes": {"min_gap_s": 0.5},
        "engine": {"kind": "nats", "worker_timeout_s": 5},
        "nats": {"url": server.url, "subject_prefix": "story", "stream_name": "STORY"},
        "leases": {"ttl_s": TTL_S},
    }
    config.write_bytes(orjson.dumps(settings))
    command = [sys.executable, "-m", "stream.cli", "run", "--quiet", "--config", str(config)]
    first = second = None
    url = server.url
    try:
        async with worker_for(url):
            first = subprocess.Popen(command, stdout=subprocess.DEVNULL)  # noqa: ASYNC220
            await wait_for(lambda: shares_are(url, [4]), 60)
            second = subprocess.Popen(command, stdout=subprocess.DEVNULL)  # noqa: ASYNC220
            await wait_for(lambda: shares_are(url, [2, 2]), 30)

            nodes = await presence(url)
            (second_key,) = [key for key, n in nodes.items() if n["pid"] == second.pid]
            client = await nats.connect(url)
            watcher = await (await client.jetstream().key_value("STORY_NODES")).watch(
                second_key, include_history=False
            )
            second.send_signal(signal.SIGKILL)
            killed_at = time.monotonic()
            second.wait(10)
            kill_tree(second.pid)
            async with asyncio.timeout(30):
                async for entry in watcher:
                    if entry is not None and entry.operation in ("DEL", "PURGE"):
                        break
            offline_s = time.monotonic() - killed_at
            await client.close()
            print(f"offline seen {offline_s:.1f} s after SIGKILL (TTL {TTL_S} s)")
            assert offline_s < OFFLINE_WITHIN_S, offline_s
            back_s = await wait_for(lambda: shares_are(url, [4]), 30)
            print(f"the dead vidcap's streams taken back {offline_s + back_s:.1f} s after SIGKILL")

            first.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(first.wait, 60) == 0
            assert await presence(url) == {}  # a clean stop leaves at once
        events = await stored_events(url, "STORY")
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.kill()
        server.stop()
    ends = set()
    for name in STREAMS:
        story = [e for e in events if e["stream"] == name]
        assert [e["seq"] for e in story] == list(range(len(story))), name
        ends |= {e["previous_end"] for e in story if e.get("state") == "resumed"}
    # Handed over cleanly when the second joined; taken back after its kill.
    assert ends == {"stopped", "interrupted"}, ends


async def shares_are(url: str, expected: list[int]) -> bool:
    nodes = await presence(url)
    return owned(nodes) == expected and all(not n["standby"] or n["owned"] for n in nodes.values())
