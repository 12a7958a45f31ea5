"""JSON Schemas of the published events; ``schemas/*.json`` are generated from here.

Run ``vidcap schemas DIR`` to write them; a test keeps the committed copies in step.
"""

from __future__ import annotations

from typing import Any, Final, get_args

from engine.errors import FailureReason
from engine.schema import CAPTION_SCHEMA
from stream.delivery.events import (
    CAPTION_SCHEMA_ID,
    LOGO_SCHEMA_ID,
    STATUS_SCHEMA_ID,
    AlertKind,
    DeliveryState,
    EventKind,
    PipelineState,
)
from stream.delivery.snapshots import NAME_PATTERN as SNAPSHOT_NAME_PATTERN
from stream.delivery.snapshots import SnapshotError
from stream.ids import STREAM_ID_PATTERN
from stream.sources.frames import SelectionReason, SourceState, TransitionKind

_STATES: Final = [*get_args(SourceState), *get_args(PipelineState), *get_args(DeliveryState)]

_NUMBER_OR_NULL: Final = {"type": ["number", "null"]}


def _envelope(schema_id: str, event_type: str) -> dict[str, Any]:
    return {
        "schema": {"const": schema_id},
        "type": {"const": event_type},
        "stream": {"type": "string", "pattern": STREAM_ID_PATTERN},
        "session": {"type": "string", "minLength": 1},
        "seq": {"type": "integer", "minimum": 0},
    }


def _strict(title: str, properties: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": title,
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
        **extra,
    }


def _object(properties: dict[str, Any]) -> dict[str, Any]:
    schema = _strict("", properties)
    del schema["$schema"], schema["title"]
    return schema


_SNAPSHOT = {
    "oneOf": [
        _object(
            {
                "bucket": {"type": "string", "minLength": 1},
                "name": {"type": "string", "pattern": SNAPSHOT_NAME_PATTERN},
                "bytes": {"type": "integer", "minimum": 1},
                "width": {"type": "integer", "minimum": 1},
                "height": {"type": "integer", "minimum": 1},
            }
        ),
        {"type": "null"},
    ]
}


def _optional(schema: dict[str, Any], *keys: str) -> dict[str, Any]:
    """``schema`` with ``keys`` no longer required (fields added without a new version)."""
    schema["required"] = [key for key in schema["required"] if key not in keys]
    return schema


# The transition that led to a keyframe (issue 20): only where there was one.
_TRANSITION = _object(
    {
        "kind": {"enum": list(get_args(TransitionKind))},
        "first_frame": {"type": "integer", "minimum": 0},
        "last_frame": {"type": "integer", "minimum": 0},
        "first_time_s": {"type": "number"},
        "last_time_s": {"type": "number"},
        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
    }
)


def _also_earlier(schema: dict[str, Any], earlier: str, added: list[str]) -> None:
    """Events of the earlier version stay valid: the same, less the ``added`` fields."""
    current = schema["properties"]["schema"]["const"]
    schema["properties"]["schema"] = {"enum": [current, earlier]}
    schema["required"] = [key for key in schema["required"] if key not in added]
    schema.setdefault("allOf", []).append(
        {"if": {"properties": {"schema": {"const": current}}}, "then": {"required": added}}
    )


_CAPTION = {key: value for key, value in CAPTION_SCHEMA.items() if key not in ("$schema", "title")}
_ERROR = _object(
    {
        "reason": {"enum": list(get_args(FailureReason))},
        "detail": {"type": "string"},
        "excerpt": {"type": "string"},
    }
)

CAPTION_EVENT_SCHEMA: Final = _strict(
    f"vidcap caption event ({CAPTION_SCHEMA_ID})",
    {
        **_envelope(CAPTION_SCHEMA_ID, "caption"),
        "keyframe": {"type": "integer", "minimum": 0},
        "frame": _object(
            {
                "index": {"type": "integer", "minimum": 0},
                "pts": {"type": ["integer", "null"]},
                "time_base": {"type": ["string", "null"]},
                "time_s": {"type": "number", "minimum": 0},
                "captured_at": {"type": "string", "format": "date-time"},
            }
        ),
        "selection": _optional(
            _object(
                {
                    "reason": {"enum": list(get_args(SelectionReason))},
                    "score": {"type": "number"},
                    "transition": _TRANSITION,
                }
            ),
            "transition",
        ),
        "status": {"enum": ["ok", "failed"]},
        "caption": {"oneOf": [_CAPTION, {"type": "null"}]},
        "error": {"oneOf": [_ERROR, {"type": "null"}]},
        "model": {"type": "string"},
        "attempts": {"type": "integer", "minimum": 1},
        "tokens": _object(
            {
                "prompt": {"type": "integer", "minimum": 0},
                "output": {"type": "integer", "minimum": 0},
            }
        ),
        "timing": _object(
            {
                "queue_s": {"type": "number"},
                "engine_s": {"type": "number"},
                "first_token_s": _NUMBER_OR_NULL,
            }
        ),
        "snapshot": _SNAPSHOT,
        "snapshot_error": {"enum": [*get_args(SnapshotError), None]},
    },
    # A caption exactly when ok; an error exactly when failed.
    oneOf=[
        {
            "properties": {
                "status": {"const": "ok"},
                "caption": {"type": "object"},
                "error": {"type": "null"},
            }
        },
        {
            "properties": {
                "status": {"const": "failed"},
                "caption": {"type": "null"},
                "error": {"type": "object"},
            }
        },
    ],
)

_also_earlier(CAPTION_EVENT_SCHEMA, "vidcap.caption/1", ["snapshot", "snapshot_error"])
# A snapshot exactly when there is no snapshot_error.
CAPTION_EVENT_SCHEMA["allOf"].append(
    {
        "anyOf": [
            {"properties": {"snapshot": {"type": "object"}, "snapshot_error": {"type": "null"}}},
            {"properties": {"snapshot": {"type": "null"}, "snapshot_error": {"type": "string"}}},
            {"not": {"required": ["snapshot"]}},
        ]
    }
)

STATUS_EVENT_SCHEMA: Final = _strict(
    f"vidcap status event ({STATUS_SCHEMA_ID})",
    {
        **_envelope(STATUS_SCHEMA_ID, "status"),
        "state": {"enum": _STATES},
        "detail": {"type": "string"},
        "at": {"type": "string", "format": "date-time"},
    },
)
STATUS_EVENT_SCHEMA["properties"].update(
    {
        "dropped": {"type": "integer", "minimum": 1},
        "reason": {"enum": ["engine_behind", "deadline"]},
        "waited_s": {"type": "number", "minimum": 0},
        "silent_s": {"type": "number", "minimum": 0},
        "attempt": {"type": "integer", "minimum": 1},
        "retry_in_s": {"type": "number", "minimum": 0},
        "gap_s": {"type": "number", "minimum": 0},
        "last_seq": {"type": "integer", "minimum": 0},
        "bytes": {"type": "integer", "minimum": 0},
        "max_payload": {"type": "integer", "minimum": 0},
        "kind": {"enum": list(get_args(EventKind))},
        "previous_session": {"type": "string"},
        "previous_end": {"enum": ["stopped", "ended", "failed", "interrupted"]},
        "resume_after_frame": {"type": "integer", "minimum": 0},
    }
)
STATUS_EVENT_SCHEMA["allOf"] = [
    {"if": {"properties": {"state": {"const": state}}}, "then": {"required": required}}
    for state, required in (
        ("keyframes_dropped", ["dropped", "reason"]),
        ("resumed", ["previous_session", "previous_end", "last_seq"]),
        ("stalled", ["silent_s"]),
        ("reconnecting", ["attempt", "retry_in_s"]),
        ("recovered", ["gap_s"]),
        ("events_dropped", ["dropped", "last_seq"]),
        ("event_too_large", ["bytes", "max_payload", "kind"]),
    )
]

LOGO_EVENT_SCHEMA: Final = _strict(
    f"vidcap logo alert ({LOGO_SCHEMA_ID})",
    {
        **_envelope(LOGO_SCHEMA_ID, "logo"),
        "alert": {"enum": list(get_args(AlertKind))},
        "brand": {"type": "string", "minLength": 1},
        "matched": {"type": "string"},
        "keyframes": {
            "type": "array",
            "minItems": 1,
            "items": _object(
                {
                    "seq": {"type": "integer", "minimum": 0},
                    "time_s": {"type": "number"},
                    "captured_at": {"type": "string", "format": "date-time"},
                    "snapshot": _SNAPSHOT,
                }
            ),
        },
    },
)
# vidcap.logo/1 had no snapshot per keyframe.
LOGO_EVENT_SCHEMA["properties"]["schema"] = {"enum": [LOGO_SCHEMA_ID, "vidcap.logo/1"]}
LOGO_EVENT_SCHEMA["properties"]["keyframes"]["items"]["required"].remove("snapshot")
LOGO_EVENT_SCHEMA["allOf"] = [
    {
        "if": {"properties": {"schema": {"const": LOGO_SCHEMA_ID}}},
        "then": {"properties": {"keyframes": {"items": {"required": ["snapshot"]}}}},
    }
]

EVENT_SCHEMAS: Final = {
    "caption-event": CAPTION_EVENT_SCHEMA,
    "status-event": STATUS_EVENT_SCHEMA,
    "logo-event": LOGO_EVENT_SCHEMA,
}
