"""10,000 malformed model outputs through the guard: nothing invalid ever gets out.

Accepted captions are re-checked with a second, independent JSON-Schema implementation
(`jsonschema`) and against the prompt's rules directly.
"""

from __future__ import annotations

import random

import jsonschema
import orjson

from engine.guard import GuardedCaption, GuardRejection, check_output, count_sentences
from engine.schema import CAPTION_FIELDS, CAPTION_SCHEMA, MAX_ACTIONS, MAX_OBJECTS

RUNS = 10_000
VALID = {
    "description": "A cyclist rides past a taxi. The street is wet.",
    "objects": ["yellow taxi", "cyclist in a blue jacket", "wet asphalt"],
    "actions": ["cyclist riding along the street"],
    "environment": "City street on an overcast day",
    "content_type": "real-world footage",
    "specific_style": "street footage",
    "production_quality": "professional camera",
    "summary": "A cyclist passes a taxi on a wet street.",
    "logos": ["TAXI sign on the cab roof"],
}
JUNK = [
    '"',
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    "\\",
    "\n",
    "\x00",
    "\x1f",
    "\u2028",
    "NaN",
    "null",
    "\ud800",
]


def mutate(rng: random.Random, text: str) -> str:
    operation = rng.randrange(9)
    position = rng.randrange(len(text) + 1)
    if operation == 0:
        return text[:position]  # truncated
    if operation == 1:
        return text[:position] + rng.choice(JUNK) + text[position:]
    if operation == 2:
        return text[:position] + text[position + rng.randint(1, 5) :]
    if operation == 3:
        return (
            rng.choice(["Sure! ", "```json\n", "Output: ", ""])
            + text
            + rng.choice(["", "\n```", " Done."])
        )
    try:
        caption = orjson.loads(text)
    except orjson.JSONDecodeError:
        caption = dict(VALID)
    if not isinstance(caption, dict):
        caption = dict(VALID)
    key = rng.choice(CAPTION_FIELDS)
    if operation == 4:
        caption.pop(key, None)
    elif operation == 5:
        caption[key] = rng.choice([1, None, True, {}, ["x", 2], "text", [], 3.5])
    elif operation == 6:
        caption[rng.choice(["mood", "Objects", "logo", ""])] = "extra"
    elif operation == 7:
        caption["objects"] = [f"object {n}" for n in range(rng.randint(0, 14))]
        caption["actions"] = [f"action {n}" for n in range(rng.randint(0, 8))]
    else:
        caption[key] = rng.choice(["  padded  ", "", "\t", "ok"])
    return orjson.dumps(caption).decode()


def prompt_rules_hold(caption: dict) -> bool:
    return (
        count_sentences(caption["description"]) <= 4
        and list(caption) == list(CAPTION_FIELDS)
        and len(caption["objects"]) <= MAX_OBJECTS
        and len(caption["actions"]) <= MAX_ACTIONS
        and all(
            isinstance(caption[k], str)
            for k in CAPTION_FIELDS
            if k not in ("objects", "actions", "logos")
        )
        and all(
            isinstance(i, str) and i for k in ("objects", "actions", "logos") for i in caption[k]
        )
    )


def test_ten_thousand_malformed_outputs_never_yield_an_invalid_caption() -> None:
    rng = random.Random(20261125)
    independent = jsonschema.Draft7Validator(CAPTION_SCHEMA)
    accepted = rejected = 0
    for _ in range(RUNS):
        text = orjson.dumps(VALID).decode()
        for _ in range(rng.randint(1, 3)):
            text = mutate(rng, text)
        result = check_output(text, rng.choice(["stop", "stop", "stop", "length", None]))
        if isinstance(result, GuardedCaption):
            accepted += 1
            assert independent.is_valid(result.caption), text
            assert prompt_rules_hold(result.caption), text
        else:
            assert isinstance(result, GuardRejection) and result.reason and result.detail
            rejected += 1
    assert accepted + rejected == RUNS
    # The mutations must really exercise both sides of the guard.
    assert rejected > RUNS // 2 and accepted > RUNS // 20, (accepted, rejected)
