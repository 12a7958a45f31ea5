"""What a user types, as an FTS5 query that cannot be a syntax error or reach a column it
should not.

The language: words (all must match; ``crowd outdoors``), ``"exact phrases"``, ``word*``
(prefix), ``OR`` between terms, ``-word`` or ``NOT word`` to exclude. Every word and phrase
is quoted before it reaches FTS5, so punctuation (``Coca-Cola``, ``AT&T``, ``c:\\``) is just
text: FTS5's own operators (``NEAR``, ``column:``, ``^``, parentheses) are not exposed.
Matching is per word, case- and accent-insensitive, with English stemming (crowds ~ crowd).
"""

from __future__ import annotations

import re
from typing import Final

from engine.errors import VidcapError

MAX_QUERY_CHARS: Final = 500
MAX_TERMS: Final = 32

_TOKEN: Final = re.compile(r'\s*(-?)(?:"([^"]*)"|([^\s"]+))(\*?)\s*')
_OPERATORS: Final = frozenset({"OR", "AND", "NOT"})


class QueryError(VidcapError):
    """The search text cannot be used; the message says why (shown to the user)."""


def fts_query(text: str) -> str | None:
    """The FTS5 expression for ``text``; None when it has no terms (match everything)."""
    if len(text) > MAX_QUERY_CHARS:
        raise QueryError(f"the search text is longer than {MAX_QUERY_CHARS} characters")
    if text.count('"') % 2:
        raise QueryError('unbalanced double quote in the search text: close the "phrase"')
    parts: list[str] = []
    position, terms = 0, 0
    while position < len(text.strip()):
        match = _TOKEN.match(text, position)
        if match is None:  # only whitespace is left
            break
        position = match.end()
        negated, phrase, word, prefix = match.groups()
        if word is not None and len(word) > 1 and word.endswith("*"):
            word, prefix = word.rstrip("*") or word, "*"
        if phrase is None and not negated and not prefix and word in _OPERATORS:
            parts.append(word)
            continue
        terms += 1
        if negated:
            parts.append("NOT")
        parts.append(quote(phrase if phrase is not None else word) + prefix)
    if terms > MAX_TERMS:
        raise QueryError(f"more than {MAX_TERMS} search terms")
    _check_operators(parts)
    return " ".join(parts) or None


def quote(text: str) -> str:
    """``text`` as one FTS5 string (a phrase of its words)."""
    return '"' + text.replace('"', '""') + '"'


def _check_operators(parts: list[str]) -> None:
    for index, part in enumerate(parts):
        if part not in _OPERATORS:
            continue
        before = parts[index - 1] if index > 0 else None
        after = parts[index + 1] if index + 1 < len(parts) else None
        if before is None or before in _OPERATORS:
            what = "an exclusion (-word, NOT word)" if part == "NOT" else part
            raise QueryError(f"{what} needs a term before it: e.g. 'crowd {part} night'")
        if after is None or after in _OPERATORS:
            raise QueryError(f"{part} needs a term after it")
