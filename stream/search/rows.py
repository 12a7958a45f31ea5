"""What one event becomes in the index, written in the caller's transaction.

Every writer inserts the event's row keyed by (stream, session, seq) and does the rest only
when that row is new, so a redelivered or twice-stored event changes nothing. What is derived
from the order of events (a caption's segment, airtime intervals, which session a stream is
in) depends only on each stream's own events, which JetStream holds in ``seq`` order: an
incremental index and a rebuild from the stream come out the same.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from typing import Any, Final

import orjson

from stream.delivery.story import FINAL_STATES

SHOT_START_REASONS: Final = frozenset({"start", "cut", "transition"})
"""A keyframe taken for one of these begins a new shot; ``interval`` (heartbeat) keyframes
continue the shot they are in."""


HOUR_OF_AT: Final = "CAST(at / 3600 AS INTEGER) - (at < CAST(at / 3600 AS INTEGER) * 3600)"
"""``at // 3600`` in SQL (floor(), not truncation, without SQLite's optional math functions)."""


class NotAnEvent(ValueError):
    """A message on the events stream that is not a vidcap event this index knows."""


def index_event(db: sqlite3.Connection, js_seq: int, event: Any) -> bool:
    """Index one decoded event; whether it was new. NotAnEvent for anything else."""
    try:
        kind = event["type"]
        identity = (str(event["stream"]), str(event["session"]), int(event["seq"]))
        if kind == "caption":
            return _caption(db, js_seq, identity, event)
        if kind == "logo":
            return _logo(db, js_seq, identity, event)
        if kind == "status":
            return _status(db, js_seq, identity, event)
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise NotAnEvent(f"{type(exc).__name__}: {exc}") from None
    raise NotAnEvent(f"unknown event type {kind!r}")


def _snapshot(reference: Any) -> str | None:
    """A caption/2 event's snapshot reference as stored (caption/1 events have none)."""
    if not isinstance(reference, dict):
        return None
    return orjson.dumps({key: reference[key] for key in ("bucket", "name")}).decode()


def unix_time(iso: str) -> float:
    moment = datetime.fromisoformat(iso)
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


Identity = tuple[str, str, int]


def _caption(db: sqlite3.Connection, js_seq: int, identity: Identity, event: Any) -> bool:
    stream, session, _ = identity
    frame, reason = event["frame"], str(event["selection"]["reason"])
    at = unix_time(frame["captured_at"])
    ok = event["status"] == "ok"
    caption = event["caption"] if ok else None
    error = None if ok else event["error"]["reason"]
    segment = _segment_now(db, stream, session) + (reason in SHOT_START_REASONS)
    text = _caption_text(caption)
    cursor = db.execute(
        "INSERT OR IGNORE INTO captions (stream, session, seq, js_seq, at, keyframe, "
        "frame_index, time_s, reason, segment, ok, error_reason, description, summary, "
        "objects, actions, environment, logos, content_type, specific_style, "
        "production_quality, snapshot) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "
        "?, ?, ?, ?, ?, ?)",
        (
            *identity,
            js_seq,
            at,
            int(event["keyframe"]),
            int(frame["index"]),
            float(frame["time_s"]),
            reason,
            segment,
            ok,
            error,
            *text,
            *_labels(caption),
            _snapshot(event.get("snapshot")),
        ),
    )
    if cursor.rowcount != 1:
        return False
    _touch_session(db, stream, session, at, segment)
    return True


def index_new_captions(db: sqlite3.Connection, after_id: int) -> None:
    """The derived rows of the captions after row ``after_id``: their text for full-text
    search and their hours; once per batch (a statement per caption cost 15 % of indexing)."""
    db.execute(
        "INSERT INTO caption_text (rowid, description, summary, objects, actions, environment, "
        "logos) SELECT id, description, summary, objects, actions, environment, logos "
        "FROM captions WHERE id > ? AND ok ORDER BY id",
        (after_id,),
    )
    db.execute(
        f"INSERT INTO caption_hours (hour, min_id, max_id) SELECT {HOUR_OF_AT}, min(id), "
        "max(id) FROM captions WHERE id > ? GROUP BY 1 "
        "ON CONFLICT (hour) DO UPDATE SET min_id = min(min_id, excluded.min_id), "
        "max_id = max(max_id, excluded.max_id)",
        (after_id,),
    )


def last_caption_id(db: sqlite3.Connection) -> int:
    return int(db.execute("SELECT coalesce(max(id), 0) FROM captions").fetchone()[0])


def _caption_text(caption: dict[str, Any] | None) -> tuple[str | None, ...]:
    if caption is None:
        return (None,) * 6
    return (
        str(caption["description"]),
        str(caption["summary"]),
        _json_list(caption["objects"]),
        _json_list(caption["actions"]),
        str(caption["environment"]),
        _json_list(caption["logos"]),
    )


def _labels(caption: dict[str, Any] | None) -> tuple[str | None, ...]:
    if caption is None:
        return (None,) * 3
    return (
        str(caption["content_type"]),
        str(caption["specific_style"]),
        str(caption["production_quality"]),
    )


def _json_list(items: Any) -> str:
    if not isinstance(items, list):
        raise TypeError(f"expected a list, got {type(items).__name__}")
    return orjson.dumps([str(item) for item in items]).decode()


def _logo(db: sqlite3.Connection, js_seq: int, identity: Identity, event: Any) -> bool:
    stream, session, seq = identity
    sightings = [unix_time(k["captured_at"]) for k in event["keyframes"]]
    alert, brand = str(event["alert"]), str(event["brand"])
    if alert not in ("appeared", "disappeared") or not sightings or not brand:
        raise ValueError(f"not a logo alert: {alert!r} {brand!r}")
    cursor = db.execute(
        "INSERT OR IGNORE INTO logo_alerts (stream, session, seq, js_seq, at, alert, brand, "
        "matched, first_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (*identity, js_seq, sightings[-1], alert, brand, str(event["matched"]), sightings[0]),
    )
    if cursor.rowcount != 1:
        return False
    _touch_session(db, stream, session, sightings[-1])
    if alert == "appeared":
        db.execute(
            "INSERT OR IGNORE INTO airtime (stream, session, brand, start_at, appeared_seq) "
            "SELECT ?, ?, ?, ?, ? WHERE NOT EXISTS (SELECT 1 FROM airtime WHERE stream = ? "
            "AND session = ? AND brand = ? AND end_at IS NULL)",
            (stream, session, brand, sightings[0], seq, stream, session, brand),
        )
    else:  # on screen until the last keyframe it was seen on: the alert's first
        db.execute(
            "UPDATE airtime SET end_at = max(start_at, ?), closed_by = 'disappeared' "
            "WHERE stream = ? AND session = ? AND brand = ? AND end_at IS NULL",
            (sightings[0], stream, session, brand),
        )
    return True


def _status(db: sqlite3.Connection, js_seq: int, identity: Identity, event: Any) -> bool:
    stream, session, _ = identity
    at, state = unix_time(event["at"]), str(event["state"])
    cursor = db.execute(
        "INSERT OR IGNORE INTO statuses (stream, session, seq, js_seq, at, state, detail) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        (*identity, js_seq, at, state, str(event["detail"])),
    )
    if cursor.rowcount != 1:
        return False
    _touch_session(db, stream, session, at)
    if state in FINAL_STATES:  # the session's logo tracker is gone: what it had open ends
        _close_open(db, stream, session, at, state)
    return True


def _segment_now(db: sqlite3.Connection, stream: str, session: str) -> int:
    row = db.execute(
        "SELECT segment FROM sessions WHERE stream = ? AND session = ?", (stream, session)
    ).fetchone()
    return int(row[0]) if row else 0


def _touch_session(
    db: sqlite3.Connection, stream: str, session: str, at: float, segment: int | None = None
) -> None:
    db.execute(
        "INSERT INTO sessions (stream, session, first_at, last_at, segment) "
        "VALUES (?, ?, ?, ?, ?) ON CONFLICT (stream, session) DO UPDATE SET "
        "first_at = min(first_at, excluded.first_at), last_at = max(last_at, excluded.last_at), "
        "segment = max(segment, excluded.segment)",
        (stream, session, at, at, segment or 0),
    )
    row = db.execute("SELECT session FROM streams WHERE stream = ?", (stream,)).fetchone()
    if row is not None and row[0] == session:
        return
    if row is not None:  # a new session: the earlier one's alerts end with its last event
        for previous, last_at in db.execute(
            "SELECT session, last_at FROM sessions WHERE stream = ? AND session != ?",
            (stream, session),
        ).fetchall():
            _close_open(db, stream, previous, last_at, "session_ended")
    db.execute("INSERT OR REPLACE INTO streams (stream, session) VALUES (?, ?)", (stream, session))


def _close_open(
    db: sqlite3.Connection, stream: str, session: str, at: float, closed_by: str
) -> None:
    db.execute(
        "UPDATE airtime SET end_at = max(start_at, ?), closed_by = ? "
        "WHERE stream = ? AND session = ? AND end_at IS NULL",
        (at, closed_by, stream, session),
    )
