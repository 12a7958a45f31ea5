"""Stream ids become NATS subject tokens, so only a safe alphabet is accepted."""

from __future__ import annotations

import re
from typing import Final

STREAM_ID_PATTERN: Final = r"^[A-Za-z0-9_-]{1,64}$"
"""For JSON Schema (ECMA-262 regex, where ``$`` is the end of the string)."""
# In Python ``$`` also matches before a trailing newline ("cam\n" would pass), so the id is
# checked with ``fullmatch`` on the bare character class.
_VALID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def validate_stream_id(stream_id: str) -> str:
    """Return ``stream_id`` unchanged, or raise ValueError saying what is wrong with it."""
    if not _VALID.fullmatch(stream_id):
        raise ValueError(
            f"invalid stream id {stream_id!r}: use 1-64 characters from A-Z a-z 0-9 _ - "
            "(dots, spaces, '*' and '>' would break NATS subjects)"
        )
    return stream_id


def stream_id_from_source(source: str, taken: set[str]) -> str:
    """A readable, unique, valid id for a source given on the command line."""
    tail = source.rstrip("/").rsplit("/", 1)[-1].split("?", 1)[0]
    stem = tail.rsplit(".", 1)[0] if "." in tail else tail
    base = _UNSAFE.sub("-", stem).strip("-")[:56] or "stream"
    candidate, n = base, 1
    while candidate in taken:
        n += 1
        candidate = f"{base}-{n}"
    return candidate
