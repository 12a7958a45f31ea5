"""The caption schema: the nine fields of the model card, with the prompt's limits."""

from __future__ import annotations

from typing import Any, Final

import fastjsonschema

MAX_OBJECTS: Final = 10
MAX_ACTIONS: Final = 5
MAX_LOGOS: Final = 10
CAPTION_FIELDS: Final = (
    "description",
    "objects",
    "actions",
    "environment",
    "content_type",
    "specific_style",
    "production_quality",
    "summary",
    "logos",
)
# Characters per string, from what the model card asks each field to be: the description at
# most 4 sentences, the environment a detailed phrase or two, the labels (content type, style,
# quality) a few words, the summary one sentence, each list item one thing "with relevant
# visual details". Roomy for real captions (the card's example uses under a third of each),
# they bound a whole caption to 7,100 characters (under 30 kB of JSON) whatever the model
# writes, far below NATS's 1 MiB payload limit.
MAX_CHARS: Final = {
    "description": 1000,
    "objects": 200,
    "actions": 200,
    "environment": 500,
    "content_type": 100,
    "specific_style": 100,
    "production_quality": 100,
    "summary": 300,
    "logos": 200,
}
MAX_ITEMS: Final = {"objects": MAX_OBJECTS, "actions": MAX_ACTIONS, "logos": MAX_LOGOS}


def _field_schema(name: str) -> dict[str, Any]:
    text = {"type": "string", "maxLength": MAX_CHARS[name]}
    if name not in MAX_ITEMS:
        return text
    return {"type": "array", "items": text, "maxItems": MAX_ITEMS[name]}


# Used twice: to constrain decoding in vLLM, and to validate every output before publishing.
CAPTION_SCHEMA: Final[dict[str, Any]] = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "title": "vidcap caption",
    "type": "object",
    "properties": {name: _field_schema(name) for name in CAPTION_FIELDS},
    "required": list(CAPTION_FIELDS),
    "additionalProperties": False,
}

validate_caption = fastjsonschema.compile(CAPTION_SCHEMA)
