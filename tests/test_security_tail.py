"""`vidcap tail` never writes a control or bidi character from an event to the terminal."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from stream.tail import format_event, raw_line

HOSTILE = "\x1b]0;pwned\x07\x1b[2J\x00\x7f\x9b31m\u202egnp.exe\u2066\r\n"
STATUS = {"type": "status", "stream": "cam", "seq": 1, "state": "failed", "detail": HOSTILE}
LOGO = {"type": "logo", "stream": "cam", "seq": 2, "alert": "appeared", "brand": HOSTILE}
LOGO["matched"] = HOSTILE
FAILED: dict[str, Any] = {
    "type": "caption",
    "stream": "cam",
    "seq": 3,
    "keyframe": 0,
    "frame": {"index": 0, "time_s": 0.0},
    "selection": {"reason": "start", "score": 0.0},
    "timing": {"engine_s": 0.1},
    "status": "failed",
    "error": {"reason": "engine_error", "detail": HOSTILE, "excerpt": ""},
}
UNKNOWN = {"type": HOSTILE, "stream": HOSTILE, "seq": 4}


@pytest.mark.parametrize("event", [STATUS, LOGO, FAILED, UNKNOWN])
def test_readable_lines_escape_control_and_bidi_characters(event: dict[str, Any]) -> None:
    line = format_event(event)
    assert line.isprintable(), repr(line)
    assert "\\x1b" in line


def test_raw_lines_stay_json_and_escape_what_json_leaves_raw() -> None:
    data = orjson.dumps(STATUS)  # orjson escapes C0, but leaves DEL, C1 and bidi raw
    line = raw_line(data)
    assert line.isprintable(), repr(line)
    assert orjson.loads(line) == STATUS


@pytest.mark.parametrize(
    "event",
    [
        {"type": "caption", "stream": "cam", "seq": 5},  # fields missing
        {"type": "caption", "stream": "cam", "seq": 6, "keyframe": 0, "frame": [], "x": 1},
        {"type": "caption", "frame": {"index": "a", "time_s": "b"}, "selection": {}},
    ],
)
def test_a_malformed_event_is_a_line_not_a_traceback(event: dict[str, Any]) -> None:
    """Anyone who may publish on vidcap.> could end every `vidcap tail` with one message."""
    line = format_event(event)
    assert line.endswith("(not a well-formed vidcap event)") and line.isprintable()
