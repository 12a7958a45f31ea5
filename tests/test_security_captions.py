"""Bounded, inert captions: no oversized field or list, no control or bidi character, gets
past the guard; markup stays as the text it is; failure details are escaped."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from engine.captioner import Captioner, CaptionOutcome
from engine.guard import GuardedCaption, GuardRejection, check_output
from engine.schema import CAPTION_FIELDS, CAPTION_SCHEMA, MAX_CHARS, MAX_ITEMS
from stream.delivery.events import CaptionEvent, Envelope, wire_json
from stream.sources.frames import FrameTime

VALID: dict[str, Any] = {
    "description": "A red square on a grey card.",
    "objects": ["red square"],
    "actions": [],
    "environment": "A plain studio backdrop",
    "content_type": "CGI",
    "specific_style": "test card",
    "production_quality": "synthetic",
    "summary": "A red square.",
    "logos": ["white ACME logo, top left"],
}
UNSAFE = ["\x00", "\x07", "\x1b", "\x7f", "\x85", "\x9b", "\u061c", "\u200e", "\u200f"]
UNSAFE += [chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A))]


def check(caption: dict[str, Any]) -> GuardedCaption | GuardRejection:
    return check_output(orjson.dumps(caption).decode(), "stop")


def test_every_string_has_a_max_length_and_every_list_a_max_count() -> None:
    for name in CAPTION_FIELDS:
        field = CAPTION_SCHEMA["properties"][name]
        text = field["items"] if field["type"] == "array" else field
        assert text["maxLength"] == MAX_CHARS[name] > 0, name
        if field["type"] == "array":
            assert field["maxItems"] == MAX_ITEMS[name], name


@pytest.mark.parametrize("name", CAPTION_FIELDS)
def test_an_oversized_field_is_rejected(name: str) -> None:
    limit = MAX_CHARS[name]
    huge = "x" * 1_200_000  # what stalled delivery: a 1.2 MB caption
    for text in ("y" * (limit + 1), huge):
        value: Any = [text] if isinstance(VALID[name], list) else text
        result = check({**VALID, name: value})
        assert isinstance(result, GuardRejection) and result.reason == "schema", name
        assert len(result.detail) < 200
    at_limit: Any = ["y" * limit] if isinstance(VALID[name], list) else "y" * limit
    assert isinstance(check({**VALID, name: at_limit}), GuardedCaption)


def test_eleven_logos_are_rejected() -> None:
    logos = [f"logo {n}" for n in range(MAX_ITEMS["logos"] + 1)]
    result = check({**VALID, "logos": logos})
    assert isinstance(result, GuardRejection) and result.reason == "schema"


def test_the_largest_accepted_caption_makes_a_small_event() -> None:
    """Every field at its limit in 4-byte characters: the event is far below 1 MiB."""
    big: dict[str, Any] = {}
    for name in CAPTION_FIELDS:
        text = "\U0001f600" * (MAX_CHARS[name] - 3)
        big[name] = [f"{n:03}{text}" for n in range(MAX_ITEMS[name])] if name in MAX_ITEMS else text
    result = check(big)
    assert isinstance(result, GuardedCaption)
    outcome = Captioner._failed("schema", "d" * 10_000, "\x1b" * 10_000, 1, 0.0, {})
    assert outcome.error is not None
    ok = CaptionOutcome(result.caption, None, 1, 0.1)
    time = FrameTime(0, 0, None, 0.0, 0.0)
    for event_outcome in (ok, outcome):
        event = CaptionEvent(0, time, "start", 0.0, event_outcome, "m", 0.0)
        assert len(wire_json(Envelope("cam", "s", 0), event)) < 64 * 1024


@pytest.mark.parametrize("char", UNSAFE, ids=lambda c: f"U+{ord(c):04X}")
def test_control_and_bidi_characters_never_reach_a_caption(char: str) -> None:
    dirty = {
        **VALID,
        "description": f"A red{char} square.",
        "objects": [f"red{char}square", char],
        "logos": [f"{char}ACME"],
    }
    result = check(dirty)
    assert isinstance(result, GuardedCaption)
    for value in result.caption.values():
        for text in value if isinstance(value, list) else [value]:
            assert char not in text
    assert result.caption["objects"] == ["redsquare"]
    assert result.caption["description"] == "A red square."


def test_markup_is_kept_as_text() -> None:
    markup = '<script>alert("x")</script> on a screen'
    result = check({**VALID, "description": markup})
    assert isinstance(result, GuardedCaption) and result.caption["description"] == markup


def test_a_failure_excerpt_shows_control_characters_escaped() -> None:
    outcome = Captioner._failed("invalid_json", "bad \x1b[2J", "{\x1b]0;pwned\x07", 1, 0.0, {})
    assert outcome.error is not None
    for text in (outcome.error["detail"], outcome.error["excerpt"]):
        assert text.isprintable(), text
    assert outcome.error["excerpt"] == "{\\x1b]0;pwned\\x07"


def test_line_breaks_and_tabs_become_spaces() -> None:
    result = check({**VALID, "summary": "One\nred\tsquare\u2028here."})
    assert (
        isinstance(result, GuardedCaption) and result.caption["summary"] == "One red square here."
    )
