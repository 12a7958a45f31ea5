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
