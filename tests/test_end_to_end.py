"""The whole path on real parts: GStreamer RTSP server -> vidcap -> vLLM (CPU) -> nats-server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fastjsonschema
import nats
import orjson

from engine.schema import validate_caption
from engine.vllm_engine import VllmEngine
from stream.config import parse_config
from stream.delivery.events import Envelope, StatusEvent
from stream.delivery.nats_server import EmbeddedNatsServer
from stream.delivery.publisher import EventPublisher, connect
from stream.delivery.schemas import EVENT_SCHEMAS
from stream.runner import Runner
from stream.sample_clip import ClipSpec
from tests.conftest import engine_and_nats

VALIDATORS = {name.split("-")[0]: fastjsonschema.compile(s) for name, s in EVENT_SCHEMAS.items()}
FRAME_TOLERANCE = 2


async def test_rtsp_feed_to_ordered_caption_events_on_nats(
    rtsp_server: Callable[[Path], str],
    sample_clip: Path,
    clip_spec: ClipSpec,
    nats_server: EmbeddedNatsServer,
    vllm_engine: VllmEngine,
    tiny_model: Path,
) -> None:
    url = rtsp_server(sample_clip)
    config = parse_config(
        {
            "streams": [
                {"id": "cam-e2e", "url": url, "read_timeout_s": 5, "reconnect_initial_s": 0.5}
            ],
            "keyframes": {"min_gap_s": 0.5, "max_interval_s": 30},
            **engine_and_nats(nats_server.url, "e2e", tiny_model, stream_name="E2E"),
        }
    )
    subscriber = await nats.connect(nats_server.url)
    delivered: list[dict[str, Any]] = []
    subjects: list[tuple[str, str]] = []  # checked below: an assert in here would only be logged
    runner = Runner(config)

    async def on_message(msg: Any) -> None:
        event = orjson.loads(msg.data)
        subjects.append((msg.subject, f"e2e.cam-e2e.{event['type']}"))
        delivered.append(event)
        if event.get("state") == "reconnecting":  # the clip has played to its end once
            runner.request_stop()

    await subscriber.subscribe("e2e.>", cb=on_message)
    await subscriber.flush()
    status = await asyncio.wait_for(runner.run(nats_server.url, engine=vllm_engine), 180)
    await subscriber.flush()
    await asyncio.sleep(0.2)
    assert status == 0
    assert subjects and all(got == expected for got, expected in subjects), subjects

    # Contiguous, in order, every event valid against its published schema.
    assert [e["seq"] for e in delivered] == list(range(len(delivered)))
    for event in delivered:
        VALIDATORS[event["type"]](event)
    states = [e["state"] for e in delivered if e["type"] == "status"]
    assert states[:2] == ["connecting", "live"]
    assert states[-1] == "stopped"

    # One caption per shot of the first playback, on its first frame, each ok or explicitly failed.
    first_play = delivered[
        : next(i for i, e in enumerate(delivered) if e.get("state") == "reconnecting")
    ]
    captions = [e for e in first_play if e["type"] == "caption"]
    assert [c["keyframe"] for c in captions] == list(range(clip_spec.shots))
    assert [c["selection"]["reason"] for c in captions] == ["start"] + ["cut"] * (
        clip_spec.shots - 1
    )
    for caption, cut in zip(captions, clip_spec.cut_frames, strict=True):
        assert abs(caption["frame"]["index"] - cut) <= FRAME_TOLERANCE, (caption["frame"], cut)
    for caption in captions:
        if caption["status"] == "ok":
            validate_caption(caption["caption"])
        else:
            assert caption["error"]["reason"] and caption["caption"] is None
    assert any(c["status"] == "ok" for c in captions)
    assert all(c["model"] == "tiny-gemma3" for c in captions)

    # JetStream holds each event once, and a re-published event is not stored again.
    # (Core subscribers do see the re-publish; JetStream consumers do not.)
    js = subscriber.jetstream()
    events = len(delivered)
    assert (await js.stream_info("E2E")).state.messages == events
    publisher = EventPublisher(await connect(config.nats, nats_server.url), config.nats)
    stored = Envelope(captions[1]["stream"], captions[1]["session"], captions[1]["seq"])
    await publisher.publish(stored, StatusEvent("live", "a retry of a stored event", time.time()))
    assert await publisher.flush(10)
    assert publisher.duplicates == 1
    assert (await js.stream_info("E2E")).state.messages == events
    await publisher.close()
    await subscriber.close()
