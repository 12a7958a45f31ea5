"""Event payloads match their published, committed JSON Schemas."""

from __future__ import annotations

import json
import time
from fractions import Fraction
from pathlib import Path

import fastjsonschema
import pytest
from PIL import Image

from engine.captioner import CaptionOutcome
from stream.delivery.events import caption_event, status_event
from stream.delivery.schemas import EVENT_SCHEMAS
from stream.sources.frames import FrameTime, Keyframe, SourceStatus

SCHEMA_DIR = Path(__file__).parents[1] / "schemas"
CAPTION = {
    "description": "d",
    "objects": ["o"],
    "actions": [],
    "environment": "e",
    "content_type": "c",
    "specific_style": "s",
    "production_quality": "p",
    "summary": "s",
    "logos": [],
}


@pytest.mark.parametrize("name", list(EVENT_SCHEMAS))
def test_committed_schemas_are_the_generated_ones(name: str) -> None:
    committed = json.loads((SCHEMA_DIR / f"{name}.schema.json").read_text())
    assert committed == EVENT_SCHEMAS[name], "run: vidcap schemas schemas/"


def keyframe() -> Keyframe:
    when = FrameTime(150, 540000, Fraction(1, 90000), 6.0, time.time())
    return Keyframe("cam1", when, "cut", 53.4, Image.new("RGB", (2, 2)))


def test_ok_and_failed_caption_events_validate_and_contradictions_do_not() -> None:
    validate = fastjsonschema.compile(EVENT_SCHEMAS["caption-event"])
    ok = CaptionOutcome(CAPTION, None, 1, 0.8, 0.1, {"prompt": 10, "output": 5})
    error = {"reason": "invalid_json", "detail": "x", "excerpt": "{"}
    failed = CaptionOutcome(None, error, 3, 2.0)
    for outcome in (ok, failed):
        validate(
            caption_event(
                session="s",
                seq=4,
                keyframe_no=2,
                keyframe=keyframe(),
                outcome=outcome,
                model="m",
                queue_s=0.2,
            )
        )
    event = caption_event(
        session="s", seq=4, keyframe_no=2, keyframe=keyframe(), outcome=ok, model="m", queue_s=0
    )
    with pytest.raises(fastjsonschema.JsonSchemaValueException):
        validate({**event, "status": "failed"})  # failed without an error
    with pytest.raises(fastjsonschema.JsonSchemaValueException):
        validate({**event, "caption": {**CAPTION, "objects": "one"}})


def test_status_events_validate_and_drops_carry_their_count() -> None:
    validate = fastjsonschema.compile(EVENT_SCHEMAS["status-event"])
    live = SourceStatus("cam1", "live", "h264 1280x720", time.time())
    validate(status_event(session="s", seq=0, status=live))
    dropped = SourceStatus("cam1", "keyframes_dropped", "engine behind", time.time())
    validate(status_event(session="s", seq=1, status=dropped, dropped=3))
    with pytest.raises(fastjsonschema.JsonSchemaValueException):
        validate(status_event(session="s", seq=1, status=dropped))
