"""The guard against a table of malformed outputs: none may pass, each with its reason."""

from __future__ import annotations

import orjson
import pytest

from engine.guard import (
    EXCERPT_CHARS,
    GuardedCaption,
    GuardRejection,
    check_output,
    count_sentences,
)
from engine.schema import CAPTION_FIELDS

VALID = {
    "description": "A red bus stops at a corner. People step off.",
    "objects": ["red double-decker bus", "bus stop sign"],
    "actions": ["passengers leaving the bus"],
    "environment": "City street in daylight",
    "content_type": "real-world footage",
    "specific_style": "news broadcast",
    "production_quality": "TV broadcast",
    "summary": "A bus lets passengers off at a city stop.",
    "logos": [],
}
VALID_TEXT = orjson.dumps(VALID).decode()


def with_(**changes: object) -> str:
    return orjson.dumps({**VALID, **changes}).decode()


def without(key: str) -> str:
    return orjson.dumps({k: v for k, v in VALID.items() if k != key}).decode()


def test_valid_output_passes_unchanged() -> None:
    result = check_output(VALID_TEXT, "stop")
    assert isinstance(result, GuardedCaption)
    assert result.caption == VALID
    assert list(result.caption) == list(CAPTION_FIELDS)


def test_raw_control_characters_in_strings_are_cleaned_not_rejected() -> None:
    # xgrammar's JSON-schema grammar lets raw control characters into bounded strings (its
    # issues #286 and #800; the tiny model writes them in about half its outputs): strict JSON
    # would reject the whole caption and spend a retry on a tab.
    raw = VALID_TEXT.replace("corner.", "corner.\n\tThen").replace("City", "Ci\x01ty\x1b[2J")
    result = check_output(raw, "stop")
    assert isinstance(result, GuardedCaption)
    assert result.caption["description"] == "A red bus stops at a corner.  Then People step off."
    assert result.caption["environment"] == "City[2J street in daylight"


def test_code_fenced_object_is_accepted() -> None:
    result = check_output(f"```json\n{VALID_TEXT}\n```", "stop")
    assert isinstance(result, GuardedCaption) and result.caption == VALID


def test_normalisation_trims_and_drops_empty_and_repeated_items() -> None:
    text = with_(summary="  padded  ", objects=["bus", " bus ", "", "sign"], logos=["  "])
    result = check_output(text, "stop")
    assert isinstance(result, GuardedCaption)
    assert result.caption["summary"] == "padded"
    assert result.caption["objects"] == ["bus", "sign"]
    assert result.caption["logos"] == []


MALFORMED = [
    ("truncated", VALID_TEXT[:-20], "stop", "invalid_json"),
    ("hit max_tokens", VALID_TEXT, "length", "truncated"),
    (
        "cut by stop string",
        VALID_TEXT[: VALID_TEXT.index("}") - 10] + "}\n",
        "stop",
        "invalid_json",
    ),
    ("aborted", VALID_TEXT, "abort", "finish_reason"),
    ("prose before", "Here is the JSON: " + VALID_TEXT, "stop", "invalid_json"),
    ("prose after", VALID_TEXT + " Hope this helps!", "stop", "invalid_json"),
    ("two objects", VALID_TEXT + VALID_TEXT, "stop", "invalid_json"),
    ("empty string", "", "stop", "empty"),
    ("whitespace only", " \n\t ", "stop", "empty"),
    ("array not object", f"[{VALID_TEXT}]", "stop", "schema"),
    ("string not object", '"description"', "stop", "schema"),
    ("null", "null", "stop", "schema"),
    ("objects is a string", with_(objects="bus"), "stop", "schema"),
    ("description is a list", with_(description=["a"]), "stop", "schema"),
    ("logos null", with_(logos=None), "stop", "schema"),
    ("number in list", with_(actions=[1]), "stop", "schema"),
    ("missing summary", without("summary"), "stop", "schema"),
    ("missing logos", without("logos"), "stop", "schema"),
    ("extra key", with_(mood="happy"), "stop", "schema"),
    ("11 objects", with_(objects=[f"o{i}" for i in range(11)]), "stop", "schema"),
    ("6 actions", with_(actions=[f"a{i}" for i in range(6)]), "stop", "schema"),
    ("single quotes", VALID_TEXT.replace('"', "'"), "stop", "invalid_json"),
    ("trailing comma", VALID_TEXT[:-1] + ",}", "stop", "invalid_json"),
    ("NaN value", VALID_TEXT.replace('"TV broadcast"', "NaN"), "stop", "invalid_json"),
    ("unterminated fence", f"```json\n{VALID_TEXT}", "stop", "invalid_json"),
]


@pytest.mark.parametrize(
    ("text", "finish_reason", "reason"),
    [case[1:] for case in MALFORMED],
    ids=[case[0] for case in MALFORMED],
)
def test_malformed_output_is_rejected_with_reason(
    text: str, finish_reason: str, reason: str
) -> None:
    result = check_output(text, finish_reason)
    assert isinstance(result, GuardRejection), f"accepted: {text!r}"
    assert result.reason == reason
    assert result.detail
    assert result.excerpt == text[:EXCERPT_CHARS]


def test_description_of_more_than_four_sentences_breaks_the_prompt_rules() -> None:
    five = "One. Two! Three? Four. Five."
    result = check_output(with_(description=five), "stop")
    assert isinstance(result, GuardRejection) and result.reason == "rules"
    four = "A 3.5 m boat, e.g. a dinghy, sails. Two. Three? Four!"
    assert isinstance(check_output(with_(description=four), "stop"), GuardedCaption)


@pytest.mark.parametrize(
    ("text", "sentences"),
    [
        ("", 0),
        ("No full stop", 1),
        ("One. Two.", 2),
        ("Wait... what?", 2),
        ('He said "go." Then left.', 2),
    ],
)
def test_sentence_count(text: str, sentences: int) -> None:
    assert count_sentences(text) == sentences


def test_excerpt_is_size_capped() -> None:
    result = check_output("x" * 10_000, "stop")
    assert isinstance(result, GuardRejection)
    assert len(result.excerpt) == EXCERPT_CHARS


def test_rejection_details_say_what_was_wrong() -> None:
    broken = '{"description": "A bus.", "objects": [}'
    invalid = check_output(broken, "stop")
    assert isinstance(invalid, GuardRejection) and invalid.reason == "invalid_json"
    assert invalid.detail not in ("", "None")  # the JSON parser's own message
    assert invalid.excerpt == broken
    five = "One. Two! Three? Four. Five."
    text = with_(description=five)
    rules = check_output(text, "stop")
    assert isinstance(rules, GuardRejection) and rules.reason == "rules"
    assert "5" in rules.detail  # how many sentences there were
    assert rules.excerpt == text[:EXCERPT_CHARS]
