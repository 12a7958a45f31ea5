"""Full-text search over the indexed captions, with filters; newest first.

Results carry what locates the keyframe: stream, session, seq, keyframe and frame, and
``js_seq``, the JetStream stream sequence of the whole event (``vidcap tail --from-seq``).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import orjson

from stream.search.query_text import QueryError, fts_query, quote
from stream.tail import parse_since

DEFAULT_LIMIT: Final = 20
MAX_LIMIT: Final = 1000
MAX_FILTER_CHARS: Final = 200


@dataclass(frozen=True, slots=True)
class SearchQuery:
    text: str = ""
    stream: str | None = None
    since: float | None = None
    """Unix seconds; captions captured at or after it."""
    until: float | None = None
    """Unix seconds; captions captured before it."""
    logo: str | None = None
    """Words that must be in one of the caption's logo descriptions."""
    object: str | None = None
    """Words that must be in one of the caption's objects."""
    content_type: str | None = None
    """Text the caption's content_type contains (case-insensitive)."""
    quality: str | None = None
    """Text the caption's production_quality contains (case-insensitive)."""
    limit: int = DEFAULT_LIMIT

    def __post_init__(self) -> None:
        if not 1 <= self.limit <= MAX_LIMIT:
            raise QueryError(f"limit must be between 1 and {MAX_LIMIT}")
        for name in ("stream", "logo", "object", "content_type", "quality"):
            value = getattr(self, name)
            if value is not None and len(value) > MAX_FILTER_CHARS:
                raise QueryError(f"{name} is longer than {MAX_FILTER_CHARS} characters")
        check_window(self.since, self.until)


def parse_moment(name: str, text: str | None) -> float | None:
    """``text`` as Unix seconds: an ISO time (UTC if no zone) or a time ago (90s, 10m, 2h,
    1d); QueryError naming ``name`` when it is neither."""
    if text is None:
        return None
    try:
        return parse_since(text).timestamp()
    except (ValueError, OverflowError):  # a huge "99999999999d" overflows
        raise QueryError(
            f"{name} {text[:40]!r}: use an ISO time (UTC if no zone) or a time ago: "
            "90s, 10m, 2h, 1d"
        ) from None


def check_window(since: float | None, until: float | None) -> None:
    if since is not None and until is not None and since >= until:
        raise QueryError("the time window is empty: since must be before until")


_COLUMNS: Final = (
    "c.stream, c.session, c.seq, c.js_seq, c.at, c.keyframe, c.frame_index, c.time_s, "
    "c.reason, c.segment, c.summary, c.description, c.objects, c.actions, c.environment, "
    "c.logos, c.content_type, c.specific_style, c.production_quality, c.snapshot"
)


def search(db: sqlite3.Connection, query: SearchQuery) -> list[dict[str, Any]]:
    """The newest captions that match ``query``, at most ``query.limit``."""
    match = _match_expression(query)
    where, args = _filters(query)
    if match is None:
        sql = f"SELECT {_COLUMNS} FROM captions c WHERE {where} ORDER BY c.id DESC LIMIT ?"
    else:
        # From the FTS table in descending rowid order: FTS5 yields matches newest first, so
        # the LIMIT stops the scan early even for a word in every caption.
        low, high = _row_ids(db, query.since, query.until)
        sql = (
            f"SELECT {_COLUMNS} FROM caption_text JOIN captions c ON c.id = caption_text.rowid "
            "WHERE caption_text MATCH ? AND caption_text.rowid BETWEEN ? AND ? "
            f"AND {where} ORDER BY caption_text.rowid DESC LIMIT ?"
        )
        args = [match, low, high, *args]
    try:
        rows = db.execute(sql, [*args, query.limit]).fetchall()
    except sqlite3.OperationalError as exc:
        if "fts5" in str(exc) or "MATCH" in str(exc):  # defence in depth: quoted terms only
            raise QueryError(f"the search text cannot be used: {exc}") from None
        raise
    return [_hit(row) for row in rows]


def _row_ids(db: sqlite3.Connection, since: float | None, until: float | None) -> tuple[int, int]:
    """Row ids that include every caption captured in [since, until) (from its hours)."""
    if since is None and until is None:
        return 0, 2**63 - 1
    first = -(2**62) if since is None else int(since // 3600)
    last = 2**62 if until is None else int(until // 3600)
    low, high = db.execute(
        "SELECT min(min_id), max(max_id) FROM caption_hours WHERE hour BETWEEN ? AND ?",
        (first, last),
    ).fetchone()
    return (1, 0) if low is None else (low, high)


def _match_expression(query: SearchQuery) -> str | None:
    parts = []
    if (text := fts_query(query.text)) is not None:
        parts.append(f"({text})")
    for column, value in (("logos", query.logo), ("objects", query.object)):
        if value is not None and value.strip():
            parts.append(f"({column} : {quote(value)})")
    return " AND ".join(parts) or None


def _filters(query: SearchQuery) -> tuple[str, list[Any]]:
    clauses, args = ["c.ok = 1"], []
    for clause, value in (
        ("c.stream = ?", query.stream),
        ("c.at >= ?", query.since),
        ("c.at < ?", query.until),
        ("c.content_type LIKE ? ESCAPE '\\'", _contains(query.content_type)),
        ("c.production_quality LIKE ? ESCAPE '\\'", _contains(query.quality)),
    ):
        if value is not None:
            clauses.append(clause)
            args.append(value)
    return " AND ".join(clauses), args


def _contains(text: str | None) -> str | None:
    if text is None or not text.strip():
        return None
    escaped = text.strip().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def iso(unix_s: float) -> str:
    return datetime.fromtimestamp(unix_s, UTC).isoformat(timespec="milliseconds")


def _hit(row: tuple[Any, ...]) -> dict[str, Any]:
    (stream, session, seq, js_seq, at, keyframe, frame_index, time_s, reason, segment) = row[:10]
    summary, description, objects, actions, environment, logos = row[10:16]
    return {
        "time": iso(at),
        "stream": stream,
        "session": session,
        "seq": seq,
        "js_seq": js_seq,
        "keyframe": keyframe,
        "frame": {"index": frame_index, "time_s": time_s},
        "reason": reason,
        "segment": segment,
        "summary": summary,
        "description": description,
        "objects": orjson.loads(objects),
        "actions": orjson.loads(actions),
        "environment": environment,
        "logos": orjson.loads(logos),
        "content_type": row[16],
        "specific_style": row[17],
        "production_quality": row[18],
        "snapshot": orjson.loads(row[19]) if row[19] else None,
    }
