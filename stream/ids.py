"""Stream ids become NATS subject tokens, so only a safe alphabet is accepted."""

from __future__ import annotations

import re
from typing import Final
from urllib.parse import urlsplit

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
    """A readable, unique, valid id for a source given on the command line: the file's name
    without its extension, a URL's last path part, else its host. Never from a URL's user
    and password (the id is in every event, subject and log line)."""
    name = _name_of(source)
    stem = name.rsplit(".", 1)[0] if "." in name else name
    base = _UNSAFE.sub("-", stem).strip("-")[:56] or "stream"
    candidate, n = base, 1
    while candidate in taken:
        n += 1
        candidate = f"{base}-{n}"
    return candidate


def _name_of(source: str) -> str:
    if "://" not in source:
        return source.rstrip("/").rsplit("/", 1)[-1]
    try:
        url = urlsplit(source)
        host = url.hostname or ""
    except ValueError:  # a malformed URL: no name from it
        return ""
    last = url.path.rstrip("/").rsplit("/", 1)[-1]
    return last if last else host.replace(".", "-")
