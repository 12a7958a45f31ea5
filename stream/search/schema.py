"""The index's tables. One row per event (captions, logo alerts, status changes), keyed by the
event's identity (stream, session, seq); the caption text in an FTS5 table over the captions;
and what the follower derives in event order: airtime intervals and per-session counters.

Bump ``SCHEMA_VERSION`` when a table changes: an index of another version is rebuilt from
JetStream (it holds nothing JetStream does not)."""

from __future__ import annotations

from typing import Final

SCHEMA_VERSION: Final = 3

TEXT_COLUMNS: Final = ("description", "summary", "objects", "actions", "environment", "logos")
"""Caption fields the full-text index covers (lists are stored as JSON arrays; the tokenizer
reads only their words)."""

DDL: Final = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS captions (
    id INTEGER PRIMARY KEY,
    stream TEXT NOT NULL, session TEXT NOT NULL, seq INTEGER NOT NULL,
    js_seq INTEGER NOT NULL,
    at REAL NOT NULL,            -- frame.captured_at, Unix seconds
    keyframe INTEGER NOT NULL, frame_index INTEGER NOT NULL, time_s REAL NOT NULL,
    reason TEXT NOT NULL, segment INTEGER NOT NULL,
    ok INTEGER NOT NULL, error_reason TEXT,
    description TEXT, summary TEXT, objects TEXT, actions TEXT, environment TEXT, logos TEXT,
    content_type TEXT, specific_style TEXT, production_quality TEXT,
    snapshot TEXT,               -- the event's snapshot reference (JSON), if it has one
    UNIQUE (stream, session, seq)
);
CREATE INDEX IF NOT EXISTS captions_at ON captions (at);
CREATE INDEX IF NOT EXISTS captions_stream_at ON captions (stream, at);
CREATE INDEX IF NOT EXISTS captions_segment ON captions (stream, session, segment);

CREATE VIRTUAL TABLE IF NOT EXISTS caption_text USING fts5 (
    {", ".join(TEXT_COLUMNS)},
    content = 'captions', content_rowid = 'id',
    tokenize = 'porter unicode61 remove_diacritics 2'
);

CREATE TABLE IF NOT EXISTS logo_alerts (
    id INTEGER PRIMARY KEY,
    stream TEXT NOT NULL, session TEXT NOT NULL, seq INTEGER NOT NULL,
    js_seq INTEGER NOT NULL,
    at REAL NOT NULL,            -- the last keyframe it names (when the alert was decided)
    alert TEXT NOT NULL, brand TEXT NOT NULL, matched TEXT NOT NULL,
    first_at REAL NOT NULL,      -- the first keyframe it names
    UNIQUE (stream, session, seq)
);

CREATE TABLE IF NOT EXISTS statuses (
    id INTEGER PRIMARY KEY,
    stream TEXT NOT NULL, session TEXT NOT NULL, seq INTEGER NOT NULL,
    js_seq INTEGER NOT NULL,
    at REAL NOT NULL, state TEXT NOT NULL, detail TEXT NOT NULL,
    UNIQUE (stream, session, seq)
);
CREATE INDEX IF NOT EXISTS statuses_stream_at ON statuses (stream, at);

-- A brand on screen: from the first keyframe of its `appeared` alert to the last keyframe it
-- was seen on (its `disappeared` alert), or to its session's end; end_at NULL while open.
CREATE TABLE IF NOT EXISTS airtime (
    id INTEGER PRIMARY KEY,
    stream TEXT NOT NULL, session TEXT NOT NULL, brand TEXT NOT NULL,
    start_at REAL NOT NULL, end_at REAL, closed_by TEXT,
    appeared_seq INTEGER NOT NULL,
    UNIQUE (stream, session, appeared_seq)
);
CREATE INDEX IF NOT EXISTS airtime_open ON airtime (stream, session, brand, end_at);
CREATE INDEX IF NOT EXISTS airtime_window ON airtime (start_at, end_at);

-- Per hour of capture time, the caption row ids in it: a time window becomes a row id range,
-- so a text search in an old window does not walk past every newer match.
CREATE TABLE IF NOT EXISTS caption_hours (
    hour INTEGER PRIMARY KEY, min_id INTEGER NOT NULL, max_id INTEGER NOT NULL
);

-- Per session of a stream: its time span and the shot (segment) its captions are in.
CREATE TABLE IF NOT EXISTS sessions (
    stream TEXT NOT NULL, session TEXT NOT NULL,
    first_at REAL NOT NULL, last_at REAL NOT NULL, segment INTEGER NOT NULL,
    PRIMARY KEY (stream, session)
) WITHOUT ROWID;
-- The session that published a stream's latest event.
CREATE TABLE IF NOT EXISTS streams (stream TEXT PRIMARY KEY, session TEXT NOT NULL)
    WITHOUT ROWID;
"""

DATA_TABLES: Final = ("captions", "logo_alerts", "statuses", "airtime", "sessions", "streams")
"""The tables that hold what was indexed (an incremental index and a rebuild compare equal)."""
DERIVED_TABLES: Final = ("caption_text", "caption_hours")
"""Tables made from row ids and text: lookups, not content."""
