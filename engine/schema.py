"""The caption schema: the nine fields of the model card, with the prompt's limits."""

from __future__ import annotations

from typing import Any, Final

import fastjsonschema

MAX_OBJECTS: Final = 10
MAX_ACTIONS: Final = 5
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
_LIST_FIELDS: Final = {"objects": MAX_OBJECTS, "actions": MAX_ACTIONS, "logos": None}


def _field_schema(name: str) -> dict[str, Any]:
    if name not in _LIST_FIELDS:
        return {"type": "string"}
    schema: dict[str, Any] = {"type": "array", "items": {"type": "string"}}
    if _LIST_FIELDS[name] is not None:
        schema["maxItems"] = _LIST_FIELDS[name]
    return schema


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
