"""Reports over a time window: logo airtime and shot segments.

Airtime: a brand is on screen from the first keyframe of its ``appeared`` alert to the last
keyframe it was seen on (named by its ``disappeared`` alert). An alert its session never
closed ends with the session (a ``stopped``, ``ended`` or ``failed`` status event, or the
session's last event once the stream goes on in a new session); one still open is counted up
to the window's end (or now, if that is earlier). Intervals are clipped to the window.

Segments: keyframes taken for a cut, a transition or the start of a stream begin a shot;
heartbeat keyframes continue it. A segment runs from its first keyframe to the next
segment's first keyframe (the session's last event for the last one).
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any, Final

from stream.search.queries import check_window, iso

DEFAULT_SEGMENTS: Final = 100
MAX_SEGMENTS: Final = 5000


def airtime(
    db: sqlite3.Connection, since: float, until: float, stream: str | None = None
) -> list[dict[str, Any]]:
    """On-screen seconds per (stream, brand) within [since, until), most first per stream."""
    check_window(since, until)
    open_until = min(until, time.time())
    rows = db.execute(
        "SELECT stream, brand, "
        "  sum(max(0, min(coalesce(end_at, :open_until), :until) - max(start_at, :since))), "
        "  count(*), sum(end_at IS NULL) "
        "FROM airtime WHERE start_at < :until AND coalesce(end_at, :open_until) >= :since "
        "  AND (:stream IS NULL OR stream = :stream) "
        "GROUP BY stream, brand ORDER BY stream, 3 DESC, brand",
        {"since": since, "until": until, "open_until": open_until, "stream": stream},
    ).fetchall()
    return [
        {
            "stream": row[0],
            "brand": row[1],
            "seconds": round(row[2], 3),
            "appearances": row[3],
            "open": row[4],
        }
        for row in rows
    ]


def segments(
    db: sqlite3.Connection,
    since: float,
    until: float,
    stream: str | None = None,
    limit: int = DEFAULT_SEGMENTS,
) -> list[dict[str, Any]]:
    """Shots with keyframes in [since, until), oldest first; one that began earlier starts at
    its first keyframe in the window."""
    check_window(since, until)
    if not 1 <= limit <= MAX_SEGMENTS:
        raise ValueError(f"limit must be between 1 and {MAX_SEGMENTS}")
    rows = db.execute(
        "WITH shots AS (SELECT stream, session, segment, min(at) AS start_at, "
        "    count(*) AS keyframes, min(seq) AS first_seq, max(seq) AS last_seq "
        "  FROM captions WHERE (:stream IS NULL OR stream = :stream) "
        "    AND at >= :since AND at < :until GROUP BY stream, session, segment) "
        "SELECT shots.*, "
        "  coalesce((SELECT min(at) FROM captions n INDEXED BY captions_segment "
        "    WHERE n.stream = shots.stream "
        "    AND n.session = shots.session AND n.segment = shots.segment + 1), "
        "    (SELECT last_at FROM sessions s WHERE s.stream = shots.stream "
        "    AND s.session = shots.session)), "
        "  (SELECT coalesce(nullif(summary, ''), description) "
        "    FROM captions f INDEXED BY captions_segment "
        "    WHERE f.stream = shots.stream AND f.session = shots.session "
        "    AND f.segment = shots.segment AND f.ok ORDER BY f.seq LIMIT 1) "
        "FROM shots ORDER BY start_at, stream, session, segment LIMIT :limit",
        {"since": since, "until": until, "stream": stream, "limit": limit},
    ).fetchall()
    return [
        {
            "stream": row[0],
            "session": row[1],
            "segment": row[2],
            "start": iso(row[3]),
            "end": iso(max(row[3], row[7])),
            "seconds": round(max(0.0, row[7] - row[3]), 3),
            "keyframes": row[4],
            "first_seq": row[5],
            "last_seq": row[6],
            "summary": row[8],
        }
        for row in rows
    ]
