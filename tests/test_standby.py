"""One writer per stream: two `vidcap run`s configured with the same stream; one owns it, the
other stands by; SIGKILL the owner and the standby takes the stream over once the lease
expires, continuing the same seq. The vidcaps, nats-server and the looped file are real, on
127.0.0.1; the caption engine is a worker in this process (as in test_story_across_runs)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import orjson

from stream.delivery.nats_server import EmbeddedNatsServer
from stream.sample_clip import ClipSpec, write_clip
from tests.conftest import kill_tree
from tests.test_story_across_runs import stored_events, worker_for

TTL_S = 3.0


async def sessions_stored(url: str) -> list[str]:
    sessions: list[str] = []
    for event in await stored_events(url, "STORY"):
        if event["session"] not in sessions:
            sessions.append(event["session"])
    return sessions


async def wait_for(condition_met: Callable[[], Awaitable[bool]], timeout_s: float) -> float:
    """Seconds until ``await condition_met()`` is true (fails after ``timeout_s``)."""
    started = time.monotonic()
    async with asyncio.timeout(timeout_s):
        while not await condition_met():  # noqa: ASYNC110 (polls the server)
            await asyncio.sleep(0.1)
    return time.monotonic() - started


async def test_the_standby_takes_over_a_killed_owners_stream_and_its_seq(tmp_path: Path) -> None:
    server = EmbeddedNatsServer(tmp_path / "nats")
    server.start()
    clip = write_clip(tmp_path / "clip.mp4", ClipSpec(shots=6, shot_frames=15, fps=25))
    config = tmp_path / "vidcap.yaml"
    settings = {
        "streams": [{"id": "lobby", "url": str(clip), "loop": True}],
        "keyframes": {"min_gap_s": 0.2},
        "engine": {"kind": "nats", "worker_timeout_s": 5},
        "nats": {"url": server.url, "subject_prefix": "story", "stream_name": "STORY"},
        "leases": {"ttl_s": TTL_S},
    }
    config.write_bytes(orjson.dumps(settings))
    command = [sys.executable, "-m", "stream.cli", "run", "--quiet", "--config", str(config)]
    owner = standby = None
    try:
        async with worker_for(server.url):
            owner = subprocess.Popen(command, stdout=subprocess.DEVNULL)  # noqa: ASYNC220
            await wait_for(lambda: has_captions(server.url), 60)
            standby = subprocess.Popen(command, stdout=subprocess.DEVNULL)  # noqa: ASYNC220
            await asyncio.sleep(3 * TTL_S)  # the standby is up and renewals went on meanwhile
            assert len(await sessions_stored(server.url)) == 1, "the standby wrote meanwhile"
            assert standby.poll() is None

            owner.send_signal(signal.SIGKILL)
            owner.wait(10)
            kill_tree(owner.pid)
            took_s = await wait_for(lambda: two_sessions(server.url), 30)
            # Taken within the lease's TTL plus the standby's poll (1 s at most) and its start.
            print(f"standby took over {took_s:.1f} s after the kill (TTL {TTL_S} s)")
            assert took_s < TTL_S + 3.0, took_s
            await asyncio.sleep(1.0)
            standby.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(standby.wait, 30) == 0
        events = await stored_events(server.url, "STORY")
    finally:
        for process in (owner, standby):
            if process is not None and process.poll() is None:
                process.kill()
        server.stop()
    assert [e["seq"] for e in events] == list(range(len(events)))  # one story, no repeat
    first, second = await_sessions(events)
    resumed = next(e for e in events if e["session"] == second)
    assert resumed["state"] == "resumed" and resumed["previous_session"] == first
    assert resumed["previous_end"] == "interrupted"
    assert f"session {first} was interrupted (vidcap died) at seq" in resumed["detail"]
    assert events[-1]["session"] == second and events[-1]["state"] == "stopped"


async def has_captions(url: str) -> bool:
    return any(e["type"] == "caption" for e in await stored_events(url, "STORY"))


async def two_sessions(url: str) -> bool:
    return len(await sessions_stored(url)) == 2


def await_sessions(events: list[dict[str, object]]) -> tuple[str, str]:
    sessions = list(dict.fromkeys(str(e["session"]) for e in events))
    assert len(sessions) == 2, sessions
    return sessions[0], sessions[1]
