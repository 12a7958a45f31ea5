"""A real GStreamer RTSP server frozen, killed and restarted under a running vidcap.

The faulted camera must report stalled / reconnecting / recovered in order with its captions
and resume captioning; a second camera on its own server must not notice anything.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import fastjsonschema
import pytest

from engine.vllm_engine import VllmEngine
from stream.bench.rtsp_peer import RtspPeer
from stream.config import parse_config
from stream.delivery.nats_server import EmbeddedNatsServer
from stream.delivery.schemas import EVENT_SCHEMAS
from stream.runner import Runner
from tests.conftest import engine_and_nats

STALL_TIMEOUT_S = 1.0
READ_TIMEOUT_S = 3.0  # longer than the stall timeout: a freeze is first "stalled"
VALIDATE = {name.split("-")[0]: fastjsonschema.compile(s) for name, s in EVENT_SCHEMAS.items()}


@pytest.fixture
def cameras() -> Iterator[tuple[RtspPeer, RtspPeer]]:
    faulted, steady = RtspPeer.for_pattern(320, 240), RtspPeer.for_pattern(320, 240)
    faulted.start()
    steady.start()
    yield faulted, steady
    faulted.kill()
    steady.kill()


def camera(stream_id: str, url: str) -> dict[str, Any]:
    return {
        "id": stream_id,
        "url": url,
        "open_timeout_s": 1,
        "read_timeout_s": READ_TIMEOUT_S,
        "stall_timeout_s": STALL_TIMEOUT_S,
        "reconnect_initial_s": 0.25,
        "reconnect_max_s": 1,
        "reconnect_jitter": 0.1,
    }


async def test_freeze_kill_restart_of_one_camera(
    cameras: tuple[RtspPeer, RtspPeer],
    nats_server: EmbeddedNatsServer,
    vllm_engine: VllmEngine,
    tiny_model: Path,
) -> None:
    faulted, steady = cameras
    config = parse_config(
        {
            "streams": [camera("faulted", faulted.url), camera("steady", steady.url)],
            # Heartbeat keyframes: the test picture has no cuts, captions must still flow.
            "keyframes": {"min_gap_s": 0.5, "max_interval_s": 1.5},
            **engine_and_nats(nats_server.url, "faults", tiny_model, short_captions=True),
        }
    )
    events: dict[str, list[dict[str, Any]]] = {"faulted": [], "steady": []}
    arrived: dict[str, asyncio.Event] = {}

    def on_event(event: dict[str, Any]) -> None:
        events[event["stream"]].append(event)
        key = f"{event['stream']}:{event.get('state', 'caption')}"
        arrived.setdefault(key, asyncio.Event()).set()

    # Arrival bounds are loose: a stream's events are published in order, so a status waits for
    # the captions in flight before it (slow on a CPU busy with the rest of the suite). When
    # the source itself noticed each fault is checked on the events' own timestamps below.
    async def next_event(key: str, within_s: float = 60) -> None:
        arrived.setdefault(key, asyncio.Event()).clear()
        await asyncio.wait_for(arrived[key].wait(), within_s)

    runner = Runner(config, on_event)
    run = asyncio.create_task(runner.run(nats_server.url, engine=vllm_engine))
    try:
        await next_event("faulted:caption", 120)

        frozen_at = time.time()
        faulted.freeze()
        await next_event("faulted:stalled")
        await next_event("faulted:reconnecting")  # FFmpeg's read timeout gave up on it
        await asyncio.sleep(1.5)  # reconnects against a frozen server time out too
        faulted.thaw()
        await next_event("faulted:recovered")
        await next_event("faulted:caption")

        killed_at = time.time()
        faulted.kill()
        await next_event("faulted:reconnecting")
        await asyncio.sleep(2)  # refused connections meanwhile
        await asyncio.to_thread(faulted.start)  # same port; the loop runs on meanwhile
        await next_event("faulted:recovered")
        await next_event("faulted:caption")
    finally:  # a failure here must not leave this runner's tasks in the suite's loop
        runner.request_stop()
        assert await asyncio.wait_for(run, 60) == 0

    for stream_events in events.values():
        assert [e["seq"] for e in stream_events] == list(range(len(stream_events)))
        for event in stream_events:
            VALIDATE[event["type"]](event)
    states = [e["state"] for e in events["faulted"] if e["type"] == "status"]
    assert states[:3] == ["connecting", "live", "stalled"], states
    first_recovery = states.index("recovered")
    assert set(states[3:first_recovery]) == {"reconnecting"}, states
    second_recovery = states.index("recovered", first_recovery + 1)
    assert set(states[first_recovery + 1 : second_recovery]) == {"reconnecting"}, states
    assert states[second_recovery + 1 :] == ["stopped"], states

    stalled = next(e for e in events["faulted"] if e.get("state") == "stalled")
    reported_after = at(stalled) - frozen_at
    assert reported_after <= STALL_TIMEOUT_S + 1.0, reported_after
    noticed = next(
        e for e in events["faulted"] if e.get("state") == "reconnecting" and at(e) > killed_at
    )
    assert at(noticed) - killed_at <= READ_TIMEOUT_S + 3.0, at(noticed) - killed_at
    recoveries = [e for e in events["faulted"] if e.get("state") == "recovered"]
    assert all(e["gap_s"] >= STALL_TIMEOUT_S for e in recoveries)
    # Positions in the whole event list (``states`` holds only the status events).
    story = events["faulted"]
    recovered_at = [i for i, e in enumerate(story) if e.get("state") == "recovered"]
    between = story[recovered_at[0] : recovered_at[1]]
    assert any(e["type"] == "caption" for e in between), "captions resumed after recovering"

    steady_states = [e["state"] for e in events["steady"] if e["type"] == "status"]
    assert steady_states == ["connecting", "live", "stopped"]
    assert sum(e["type"] == "caption" for e in events["steady"]) >= 5


def at(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(event["at"]).timestamp()
