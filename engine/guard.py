"""The guard: turns raw model text into a schema-valid caption, or says precisely why not.

Nothing the model writes is trusted: grammar-constrained decoding still produces truncated
output, raw control characters and strings cut by a stop sequence (see the vLLM-on-CPU notes).
Raw control characters are removed before the parse rather than rejected: xgrammar's grammar
for a length-bounded string lets them in (xgrammar issues #286, #800), and a tab in a good
caption is not worth a retry. Accepted captions carry no control characters (C0, DEL, C1) and
no bidirectional-text controls, which could rewrite a terminal or make text read differently
from what it is; markup such as ``<script>`` is kept as the text it is: events are data,
never rendered.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final

import fastjsonschema
import orjson

from engine.errors import FailureReason
from engine.schema import CAPTION_FIELDS, validate_caption

EXCERPT_CHARS: Final = 300
MAX_DESCRIPTION_SENTENCES: Final = 4
_SENTENCE_END = re.compile(r"(?<!\be\.g)(?<!\bi\.e)(?<!\bvs)(?<!\bMr)(?<!\bDr)[.!?]+[\"')\]]*\s")
_CODE_FENCE = re.compile(r"\A```(?:json)?\s*\n(.*?)\n?```\Z", re.S)
_LINE_BREAKS: Final = "\t\n\r\u2028\u2029"
_BIDI_CONTROLS: Final = "\u061c\u200e\u200f" + "".join(map(chr, range(0x202A, 0x202F)))
_BIDI_CONTROLS_ALL: Final = _BIDI_CONTROLS + "".join(map(chr, range(0x2066, 0x206A)))
_UNSAFE: Final = frozenset(
    [*map(chr, range(0x20)), "\x7f", *map(chr, range(0x80, 0xA0)), *_BIDI_CONTROLS_ALL]
)
# Line breaks and tabs become spaces (a caption is one line of text); the rest is removed.
_CLEAN: Final = {ord(c): (" " if c in _LINE_BREAKS else None) for c in _UNSAFE | set(_LINE_BREAKS)}
_ESCAPE: Final = {ord(c): c.encode("unicode_escape").decode() for c in _UNSAFE}


@dataclass(frozen=True, slots=True)
class GuardRejection:
    """Why one output was refused; ``retryable`` says whether asking again can help."""

    reason: FailureReason
    detail: str
    excerpt: str
    retryable: bool = True


@dataclass(frozen=True, slots=True)
class GuardedCaption:
    caption: dict[str, Any]


def check_output(text: str, finish_reason: str | None) -> GuardedCaption | GuardRejection:
    """Check one completion: finish reason, JSON syntax, schema, the prompt's rules.
    Never raises."""
    excerpt = text[:EXCERPT_CHARS]
    if finish_reason == "length":
        return GuardRejection("truncated", "output hit max_tokens before the JSON closed", excerpt)
    if finish_reason not in ("stop", None):
        return GuardRejection(
            "finish_reason", f"unexpected finish reason {finish_reason!r}", excerpt
        )
    body = _strip_code_fence(text.strip())
    if not body:
        return GuardRejection("empty", "the model returned no text", excerpt)
    try:
        value = orjson.loads(clean_text(body))
    except orjson.JSONDecodeError as exc:
        return GuardRejection("invalid_json", str(exc), excerpt)
    try:
        validate_caption(value)
    except fastjsonschema.JsonSchemaValueException as exc:
        return GuardRejection("schema", exc.message, excerpt)
    sentences = count_sentences(value["description"])
    if sentences > MAX_DESCRIPTION_SENTENCES:
        detail = f"description has {sentences} sentences (the prompt allows 4)"
        return GuardRejection("rules", detail, excerpt)
    return GuardedCaption(_normalise(value))


def count_sentences(text: str) -> int:
    """Sentences as a reader counts them: terminal punctuation followed by a space or the end
    (so "3.5 m" and "e.g." inside a sentence do not split it)."""
    return len(_SENTENCE_END.findall(text.strip() + " ")) or (1 if text.strip() else 0)


def _strip_code_fence(body: str) -> str:
    # A fenced object is still exactly one JSON object; prose around it is not accepted.
    match = _CODE_FENCE.match(body)
    return match.group(1).strip() if match else body


def clean_text(text: str) -> str:
    """``text`` without control and bidi characters (line breaks and tabs become spaces)."""
    return text.translate(_CLEAN)


def printable(text: str) -> str:
    """``text`` with control and bidi characters shown as escapes (``\\x1b``): for failure
    details and excerpts, where what the model wrote matters."""
    return text.translate(_ESCAPE)


def _normalise(caption: dict[str, Any]) -> dict[str, Any]:
    """Fields in the schema's order; strings cleaned and trimmed; empty and repeated list items
    dropped."""
    normalised: dict[str, Any] = {}
    for key in CAPTION_FIELDS:
        value = caption[key]
        if isinstance(value, str):
            normalised[key] = clean_text(value).strip()
        else:
            items = (clean_text(item).strip() for item in value)
            normalised[key] = list(dict.fromkeys(item for item in items if item))
    return normalised
