"""The index database: one SQLite file, written by one follower, read by any number of
queries (WAL: readers never wait for the writer).

A batch of events and the JetStream stream sequence it reaches are committed in one
transaction, so after a crash the index holds exactly the events up to its recorded position
and the follower resumes right after it.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import orjson

from engine.errors import VidcapError
from stream.search.rows import NotAnEvent, index_event, index_new_captions, last_caption_id
from stream.search.schema import DATA_TABLES, DDL, DERIVED_TABLES, SCHEMA_VERSION

logger = logging.getLogger(__name__)

BUSY_TIMEOUT_S: Final = 5.0
"""How long a statement waits for another connection's lock before it fails."""


WRITER_CACHE_KIB: Final = 64 * 1024
"""The follower's page cache: the indexes it updates stay in memory well past 1M captions
(SQLite's default is 2 MiB, and indexing slowed down as the file grew)."""


class SearchIndexError(VidcapError):
    """The index cannot be opened or used; the message says which file and why."""


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """One message of the JetStream stream: its stream sequence and payload."""

    js_seq: int
    data: bytes


@dataclass(frozen=True, slots=True)
class BatchResult:
    indexed: int
    """Events new to the index."""
    duplicates: int
    """Events it already held (redelivered, or stored twice in JetStream)."""
    skipped: int
    """Messages that are not vidcap events (or were at or below the recorded position)."""


def connect(path: Path, *, read_only: bool = False) -> sqlite3.Connection:
    """A connection to the index at ``path``; read-only ones need the file to exist."""
    try:
        if read_only:
            db = sqlite3.connect(
                f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S
            )
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, check_same_thread=False)
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = NORMAL")  # WAL: a crash loses no commit
            db.execute(f"PRAGMA cache_size = -{WRITER_CACHE_KIB}")
    except (sqlite3.Error, OSError) as exc:
        raise SearchIndexError(f"search index {path}: {exc}") from None
    db.execute("PRAGMA query_only = 1" if read_only else "PRAGMA foreign_keys = 0")
    return db


class IndexStore:
    """The follower's side of the index: apply batches, know the position, start over."""

    def __init__(self, path: Path, stream_name: str) -> None:
        self.path = path
        self._db = connect(path)
        try:
            self._prepare(stream_name)
        except sqlite3.Error as exc:
            self._db.close()
            raise SearchIndexError(f"search index {path}: {exc}") from None
        except BaseException:
            self._db.close()
            raise

    def _prepare(self, stream_name: str) -> None:
        if not _has_fts5(self._db):
            raise SearchIndexError("this Python's SQLite has no FTS5 (full-text search)")
        version = self._meta("schema_version")
        if version is not None and version != SCHEMA_VERSION:
            logger.warning(
                "search index %s has schema %s, not %s: rebuilding it from JetStream",
                self.path,
                version,
                SCHEMA_VERSION,
            )
            self._drop_all()
        with self._db:
            self._db.executescript(DDL)
            self._set_meta("schema_version", SCHEMA_VERSION)
            known = self._meta("stream_name")
            if known is not None and known != stream_name:
                raise SearchIndexError(
                    f"search index {self.path} follows JetStream stream {known!r}, not "
                    f"{stream_name!r}: use another --db, or --rebuild"
                )
            self._set_meta("stream_name", stream_name)

    @property
    def position(self) -> int:
        """The last JetStream stream sequence indexed (0: none)."""
        return int(self._meta("position") or 0)

    @property
    def stream_created(self) -> str | None:
        """When the JetStream stream the index holds was created (None: not known yet)."""
        created = self._meta("stream_created")
        return None if created is None else str(created)

    def note_stream_created(self, created: str) -> None:
        with self._db:
            self._set_meta("stream_created", created)

    def apply(self, messages: Iterable[StoredMessage]) -> BatchResult:
        """Index ``messages`` (in stream order) and record the position, in one transaction."""
        indexed = duplicates = skipped = 0
        position = self.position
        with self._db:
            last_caption = last_caption_id(self._db)
            for message in messages:
                if message.js_seq <= position:
                    skipped += 1  # delivered again after a commit whose ack was lost
                    continue
                position = message.js_seq
                outcome = self._index(message)
                indexed += outcome is True
                duplicates += outcome is False
                skipped += outcome is None
            index_new_captions(self._db, last_caption)
            self._set_meta("position", position)
        return BatchResult(indexed, duplicates, skipped)

    def _index(self, message: StoredMessage) -> bool | None:
        try:
            return index_event(self._db, message.js_seq, orjson.loads(message.data))
        except (orjson.JSONDecodeError, NotAnEvent) as exc:
            logger.warning("search index: JetStream message %d skipped: %s", message.js_seq, exc)
            return None

    def reset(self, stream_name: str) -> None:
        """Empty the index (a rebuild follows)."""
        self._drop_all()
        self._prepare(stream_name)

    def close(self) -> None:
        self._db.close()

    def _drop_all(self) -> None:
        with self._db:
            for table in (*DERIVED_TABLES, *DATA_TABLES, "meta"):
                self._db.execute(f"DROP TABLE IF EXISTS {table}")  # noqa: S608 (fixed names)
        self._db.execute("VACUUM")

    def _meta(self, key: str) -> Any:
        try:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        except sqlite3.OperationalError:  # no meta table yet: a new file
            return None
        return row[0] if row else None

    def _set_meta(self, key: str, value: Any) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))


def _has_fts5(db: sqlite3.Connection) -> bool:
    try:
        db.execute("CREATE VIRTUAL TABLE temp.fts5_probe USING fts5 (text)")
    except sqlite3.OperationalError:
        return False
    db.execute("DROP TABLE temp.fts5_probe")
    return True


@contextmanager
def reading(path: Path) -> Iterator[sqlite3.Connection]:
    """A read-only connection for one query (many may run at once beside the follower)."""
    with closing(connect(path, read_only=True)) as db:
        yield db


def dump(db: sqlite3.Connection) -> dict[str, list[tuple[Any, ...]]]:
    """Every row the index holds, by table, without row ids: two indexes built from the same
    events compare equal (the tests, the benchmark)."""
    return {
        table: sorted(
            tuple(
                value for name, value in zip(_columns(db, table), row, strict=True) if name != "id"
            )
            for row in db.execute(f"SELECT * FROM {table}")  # noqa: S608 (fixed names)
        )
        for table in DATA_TABLES
    }


def _columns(db: sqlite3.Connection, table: str) -> list[str]:
    return [row[1] for row in db.execute(f"PRAGMA table_info({table})")]
