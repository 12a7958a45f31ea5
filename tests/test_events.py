"""Typed events become exactly the documented wire JSON: committed schemas, golden bytes."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import fastjsonschema
import pytest

from engine.captioner import CaptionOutcome
from stream.delivery.events import (
    CaptionEvent,
    Envelope,
    Event,
    LogoEvent,
    LogoSighting,
    StatusEvent,
    wire_json,
    wire_object,
)
from stream.delivery.schemas import EVENT_SCHEMAS
from stream.delivery.snapshots import Snapshot, SnapshotOutcome
from stream.sources.frames import FrameTime, SourceStatus

SCHEMA_DIR = Path(__file__).parents[1] / "schemas"
GOLDEN_DIR = Path(__file__).parent / "golden"
VALIDATE = {name.split("-")[0]: fastjsonschema.compile(s) for name, s in EVENT_SCHEMAS.items()}
AT = 1764530000.1234
SESSION = "a1b2c3d4e5f6"
CAPTION = {
    "description": "A <b>studio</b> anchor reads the news.",
    "objects": ["desk", "microphone"],
    "actions": ["reading"],
    "environment": "TV studio",
    "content_type": "news",
    "specific_style": "broadcast",
    "production_quality": "professional",
    "summary": "Anchor at a desk.",
    "logos": ["white BBC logo, lower left"],
}
PICTURE = Snapshot("VIDCAP_SNAPSHOTS", f"cam1/{SESSION}/2", 61234, 896, 504)
CUT = FrameTime(150, 540000, Fraction(1, 90000), 6.0, AT)
START = FrameTime(0, None, None, 0.0, AT)
OK = CaptionOutcome(CAPTION, None, 1, 0.81234, 0.10456, {"prompt": 310, "output": 95})
TRUNCATED = CaptionOutcome(
    None,
    {"reason": "truncated", "detail": "output hit max_tokens", "excerpt": '{"descr'},
    3,
    2.34567,
)

# Every event kind, as the pipeline, the sources and the outbox build them. The golden files
# were written by the dict-based serialiser these types replaced: the wire did not change
# (until vidcap.status/4 added the drops' reason, and caption/2 and logo/2 the snapshots).
EXAMPLES: dict[str, tuple[int, Event]] = {
    "caption-ok": (
        7,
        CaptionEvent(
            2, CUT, "cut", 53.4, OK, "wynd-vidcap-12b", 0.23456, SnapshotOutcome(PICTURE, None)
        ),
    ),
    "caption-failed": (8, CaptionEvent(0, START, "start", 0.0, TRUNCATED, "wynd-vidcap-12b", 0.0)),
    "status-live": (
        0,
        StatusEvent.of_source(SourceStatus("cam1", "live", "h264 1280x720 @ 25 fps", AT)),
    ),
    "status-reconnecting": (
        3,
        StatusEvent.of_source(
            SourceStatus(
                "cam1", "reconnecting", "connection refused", AT, {"attempt": 2, "retry_in_s": 1.5}
            )
        ),
    ),
    "status-keyframes-dropped": (
        4,
        StatusEvent(
            "keyframes_dropped",
            "engine behind: 2 dropped",
            AT,
            {"dropped": 2, "reason": "engine_behind"},
        ),
    ),
    "status-keyframes-late": (
        6,
        StatusEvent(
            "keyframes_dropped",
            "1 keyframe(s) dropped: their turn at the engine came 2.50 s after capture",
            AT,
            {"dropped": 1, "reason": "deadline", "waited_s": 2.5},
        ),
    ),
    "status-events-dropped": (
        5,
        StatusEvent(
            "events_dropped",
            "outbox full while NATS was unavailable: events 5-9 dropped",
            AT,
            {"dropped": 5, "last_seq": 9},
        ),
    ),
    "logo-appeared": (
        9,
        LogoEvent(
            "appeared",
            "bbc",
            "white BBC logo, lower left",
            (LogoSighting(7, 6.0, AT, PICTURE), LogoSighting(8, 8.0, AT + 2)),
        ),
    ),
}


@pytest.mark.parametrize("name", list(EVENT_SCHEMAS))
def test_committed_schemas_are_the_generated_ones(name: str) -> None:
    committed = json.loads((SCHEMA_DIR / f"{name}.schema.json").read_text())
    assert committed == EVENT_SCHEMAS[name], "run: vidcap schemas schemas/"


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_wire_json_is_the_golden_example_and_validates(name: str) -> None:
    seq, event = EXAMPLES[name]
    payload = wire_json(Envelope("cam1", SESSION, seq), event)
    assert payload + b"\n" == (GOLDEN_DIR / f"{name}.json").read_bytes()
    VALIDATE[event.kind](json.loads(payload))


@pytest.mark.parametrize("name", ["caption-ok-v1", "logo-appeared-v1"])
def test_events_of_the_earlier_versions_still_validate(name: str) -> None:
    event = json.loads((GOLDEN_DIR / "earlier" / f"{name}.json").read_bytes())
    VALIDATE[event["type"]](event)
    with pytest.raises(fastjsonschema.JsonSchemaValueException):  # /2 needs the new fields
        VALIDATE[event["type"]]({**event, "schema": event["schema"][:-1] + "2"})


def test_a_caption_has_a_snapshot_or_says_why_not_never_both() -> None:
    envelope = Envelope("cam1", SESSION, 4)
    ok = wire_object(envelope, EXAMPLES["caption-ok"][1])
    VALIDATE["caption"]({**ok, "snapshot": None, "snapshot_error": "full"})
    for bad in (
        {"snapshot_error": "slow"},  # both
        {"snapshot": None},  # neither
        {"snapshot": {**PICTURE.wire(), "name": "../../etc/passwd"}},
        {"snapshot_error": "lost"},
    ):
        with pytest.raises(fastjsonschema.JsonSchemaValueException):
            VALIDATE["caption"]({**ok, **bad})


def test_every_event_kind_and_state_has_a_golden_example() -> None:
    kinds = {event.kind for _, event in EXAMPLES.values()}
    assert kinds == {"caption", "status", "logo"}


def test_schemas_refuse_contradictions_and_drops_without_a_count() -> None:
    envelope = Envelope("cam1", "s", 4)
    ok = wire_object(envelope, CaptionEvent(2, CUT, "cut", 1.0, OK, "m", 0.0))
    with pytest.raises(fastjsonschema.JsonSchemaValueException):
        VALIDATE["caption"]({**ok, "status": "failed"})  # failed without an error
    with pytest.raises(fastjsonschema.JsonSchemaValueException):
        VALIDATE["caption"]({**ok, "caption": {**CAPTION, "objects": "one"}})
    dropped = StatusEvent("keyframes_dropped", "engine behind", AT)
    with pytest.raises(fastjsonschema.JsonSchemaValueException):
        VALIDATE["status"](wire_object(envelope, dropped))


def test_msg_id_names_stream_session_and_seq() -> None:
    assert Envelope("cam-2", "abc", 17).msg_id == "cam-2:abc:17"


def test_vidcap_schemas_into_a_folder_it_cannot_make_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from stream.cli import main

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert main(["schemas", str(blocker / "schemas")]) == 1  # a traceback before
    assert capsys.readouterr().err.startswith(f"vidcap schemas: cannot write {blocker / 'schemas'}")
    assert main(["schemas", str(tmp_path / "out")]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        f"{name}.schema.json" for name in EVENT_SCHEMAS
    )
