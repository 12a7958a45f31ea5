"""A local append-only spool of the events waiting for JetStream.

An event is written here before it counts as produced and marked done once JetStream has
acknowledged it, so what vidcap produced survives its own death (SIGKILL, OOM) and, with
fsync, the machine's. The spool is a directory of segment files, each a sequence of records:

    magic "VS" | body length (u32) | CRC-32 of the body (u32) | body

and a body is a type byte, the record id (u64) and the data: ``E`` an event (a JSON line of
its place and subject, then its wire JSON), ``R`` the same event restated (its slot now holds
another payload: a stand-in for dropped events, or a too-large notice), ``X`` done (stored by
JetStream, or merged into a stand-in). A segment is deleted once every event in it, and in
every segment before it, is done. A record that is short or fails its CRC (a torn write at
the tail, or a damaged disk) is reported and cut off, never replayed.

Each vidcap process holds one slot of the spool directory (a file lock); the kernel drops the
lock when the process dies, so the next run on the machine takes the slot and its events.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import fcntl
import hashlib
import logging
import os
import struct
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final

import orjson

from engine.errors import VidcapError
from stream.config import NatsConfig, SpoolConfig

logger = logging.getLogger(__name__)

MAGIC: Final = b"VS"
RECORD_HEADER: Final = struct.Struct("<2sII")
BODY_HEAD: Final = struct.Struct("<cQ")
EVENT, RESTATED, DONE = b"E", b"R", b"X"
SEGMENT_BYTES: Final = 4 << 20
MAX_BODY: Final = 80 << 20
"""Larger than any event NATS takes (its max_payload is at most 64 MB): a longer length
field is damage, not an event."""
SEGMENT_SUFFIX: Final = ".spool"


class SpoolError(VidcapError):
    """The spool cannot be opened or written (the directory, the disk)."""


@dataclass(slots=True)
class SpooledEvent:
    """An event in the spool: its place in its stream's story and the bytes to publish."""

    record: int
    stream: str
    session: str
    seq: int
    kind: str
    subject: str
    payload: bytes
    produced_at: float
    dropped_through: int | None = None


@dataclass(slots=True)
class Recovery:
    """What an earlier run left in the spool."""

    events: list[SpooledEvent]
    expired: int = 0
    """Events older than max_age_s, not delivered."""
    corrupt: list[str] = field(default_factory=list)
    """One line per damaged place found (segment, offset, bytes cut off)."""


@dataclass(slots=True)
class _Segment:
    first: int
    path: Path
    size: int
    live: int = 0


class Spool:
    """One slot of the spool directory, open for appending. Use :func:`open_spool`."""

    def __init__(
        self,
        directory: Path,
        lock: IO[bytes],
        fsync: str,
        fsync_interval_s: float,
        max_bytes: int,
    ) -> None:
        self.directory = directory
        self._lock = lock
        self._fsync = fsync
        self._fsync_interval_s = fsync_interval_s
        self.max_bytes = max_bytes
        self._segments: list[_Segment] = []
        self._segment_of: dict[int, int] = {}  # live record -> first id of its segment
        self._next_id = 0
        self._file: IO[bytes] | None = None
        self._unsynced: list[IO[bytes]] = []  # files written since their last fsync
        self._writes = 0  # records written by this process
        self._synced_writes = 0  # of which known to be on disk
        self._synced = asyncio.Event()
        self._syncer: asyncio.Task[None] | None = None
        self._dirty = asyncio.Event()

    # ---- the size and the state ----

    @property
    def size(self) -> int:
        return sum(segment.size for segment in self._segments)

    @property
    def events(self) -> int:
        """Events in the spool that are not done."""
        return len(self._segment_of)

    @property
    def fill(self) -> float:
        return self.size / self.max_bytes

    def has_room(self, incoming: int) -> bool:
        return self.size + incoming + RECORD_HEADER.size + 256 <= self.max_bytes

    # ---- writing ----

    def append(self, event: SpooledEvent) -> int:
        """Write an event; returns its record id (``event.record`` is ignored)."""
        record = self._next_id
        self._next_id += 1
        self._write(EVENT, record, _event_data(event))
        self._segment_of[record] = self._segments[-1].first
        self._segments[-1].live += 1
        return record

    def restate(self, record: int, event: SpooledEvent) -> None:
        """The event in ``record``'s slot is now ``event`` (same place, other payload)."""
        self._write(RESTATED, record, _event_data(event))

    def done(self, record: int) -> None:
        """``record`` needs no delivery any more (stored, or merged into a stand-in)."""
        first = self._segment_of.pop(record, None)
        if first is None:
            return
        self._write(DONE, record, b"")
        index = bisect.bisect_left([s.first for s in self._segments], first)
        self._segments[index].live -= 1
        self._delete_done_segments()

    def _write(self, kind: bytes, record: int, data: bytes) -> None:
        body = BODY_HEAD.pack(kind, record) + data
        blob = RECORD_HEADER.pack(MAGIC, len(body), zlib.crc32(body)) + body
        current = self._current_file(len(blob))
        try:
            current.write(blob)
        except OSError as exc:
            raise SpoolError(f"cannot write the spool in {self.directory}: {exc}") from exc
        self._segments[-1].size += len(blob)
        self._writes += 1
        if self._fsync != "never":
            if current not in self._unsynced:
                self._unsynced.append(current)
            self._dirty.set()

    def _current_file(self, incoming: int) -> IO[bytes]:
        if self._file is None or self._segments[-1].size + incoming > SEGMENT_BYTES:
            self._start_segment()
        assert self._file is not None
        return self._file

    def _start_segment(self) -> None:
        if self._file is not None and self._fsync == "never":
            self._file.close()
        elif self._file is not None and self._file not in self._unsynced:
            self._unsynced.append(self._file)  # the syncer closes it after its last fsync
            self._dirty.set()
        path = self.directory / f"{self._next_id:020d}{SEGMENT_SUFFIX}"
        try:
            self._file = open(path, "ab", buffering=0)  # noqa: SIM115 (kept open: appended to)
        except OSError as exc:
            raise SpoolError(f"cannot create a spool segment in {self.directory}: {exc}") from exc
        self._segments.append(_Segment(self._next_id, path, 0))

    def _delete_done_segments(self) -> None:
        """Delete done segments from the front (never the one being written)."""
        while len(self._segments) > 1 and self._segments[0].live == 0:
            segment = self._segments.pop(0)
            with contextlib.suppress(FileNotFoundError):
                segment.path.unlink()

    # ---- durability ----

    async def durable(self) -> None:
        """Return once what was written so far is on disk as the fsync policy promises: at
        once for ``interval`` and ``never``; after an fsync for ``always`` (one fsync for
        everything written while the previous one ran)."""
        if self._fsync != "always":
            return
        self._start_syncer()
        written = self._writes
        while self._synced_writes < written:
            self._synced.clear()
            await self._synced.wait()

    def _start_syncer(self) -> None:
        if self._syncer is None and self._fsync != "never":
            self._syncer = asyncio.create_task(self._sync_forever(), name="vidcap-spool-sync")

    def start(self) -> None:
        """Start the background fsync (``interval`` and ``always``)."""
        self._start_syncer()

    async def _sync_forever(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            files, self._unsynced = self._unsynced, []
            written = self._writes
            await asyncio.to_thread(_sync_files, files)
            for synced in files:
                if synced is not self._file and synced not in self._unsynced:
                    synced.close()
            self._synced_writes = written
            self._synced.set()
            if self._fsync == "interval":
                await asyncio.sleep(self._fsync_interval_s)

    async def close(self) -> None:
        """Stop the background fsync, put everything on disk (unless ``never``), unlock."""
        if self._syncer is not None:
            self._syncer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._syncer
        files = list(self._unsynced)
        if self._file is not None and self._file not in files:
            files.append(self._file)
        if self._fsync != "never":
            await asyncio.to_thread(_sync_files, files)
        for file in files:
            file.close()
        self._unsynced, self._file = [], None
        if not self._segment_of:  # everything delivered: leave an empty slot
            for segment in self._segments:
                segment.path.unlink(missing_ok=True)
            self._segments.clear()
        self._lock.close()  # releases the slot

    # ---- reading what an earlier run left ----

    def recover(self, max_age_s: float, now: float | None = None) -> Recovery:
        """Read the slot's segments: the events not done, oldest first. Damaged records are
        cut off and reported; events older than ``max_age_s`` are left out (and done)."""
        now = time.time() if now is None else now
        paths = sorted(self.directory.glob(f"*{SEGMENT_SUFFIX}"))
        events: dict[int, SpooledEvent] = {}
        recovery = Recovery([])
        for path in paths:
            segment = _Segment(int(path.stem), path, 0)
            for kind, record, data in _read_segment(path, recovery.corrupt, path == paths[-1]):
                self._next_id = max(self._next_id, record + 1)
                if kind == DONE:
                    events.pop(record, None)
                elif kind in (EVENT, RESTATED):
                    events[record] = _event_from(record, data)
                    if kind == EVENT:
                        self._segment_of[record] = segment.first
            segment.size = path.stat().st_size
            if segment.size == 0:
                path.unlink()
                continue
            self._segments.append(segment)
        for record in list(self._segment_of):
            event = events.get(record)
            if event is not None and max_age_s and now - event.produced_at > max_age_s:
                recovery.expired += 1
                del events[record]
            if record not in events:
                del self._segment_of[record]
        for first in self._segment_of.values():
            self._segments[bisect.bisect_left([s.first for s in self._segments], first)].live += 1
        recovery.events = [events[record] for record in sorted(events)]
        self._delete_done_segments()
        if self._segments and self._segments[-1].live == 0:
            self._segments[-1].path.unlink(missing_ok=True)
            self._segments.pop()
        return recovery


def spool_root(config: SpoolConfig, nats: NatsConfig, cache: Path) -> Path:
    """The spool's folder for one destination: events spooled for a NATS server and stream
    are only ever delivered there."""
    base = config.path or Path(os.environ.get("VIDCAP_SPOOL_DIR") or cache / "spool")
    destination = f"{nats.url or 'embedded'} {nats.stream_name}"
    digest = hashlib.sha256(destination.encode()).hexdigest()[:16]
    return base / f"{nats.stream_name}-{digest}"


def open_spool(root: Path, config: SpoolConfig) -> tuple[Spool, Recovery]:
    """Take the first free slot under ``root`` (``slot-0``, ``slot-1``, ...) and read what an
    earlier run left there."""
    for number in range(1024):
        directory = root / f"slot-{number}"
        try:
            directory.mkdir(parents=True, exist_ok=True)
            lock = open(directory / "lock", "ab")  # noqa: SIM115 (held while the spool is open)
        except OSError as exc:
            raise SpoolError(f"cannot open the spool in {directory}: {exc}") from exc
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            continue
        spool = Spool(directory, lock, config.fsync, config.fsync_interval_s, config.max_bytes)
        return spool, spool.recover(config.max_age_s)
    raise SpoolError(f"every slot of the spool in {root} is in use")


def _sync_files(files: list[IO[bytes]]) -> None:
    for file in files:
        with contextlib.suppress(ValueError):  # closed meanwhile: nothing left to sync
            os.fsync(file.fileno())


def _event_data(event: SpooledEvent) -> bytes:
    place: dict[str, Any] = {
        "stream": event.stream,
        "session": event.session,
        "seq": event.seq,
        "kind": event.kind,
        "subject": event.subject,
        "at": event.produced_at,
    }
    if event.dropped_through is not None:
        place["dropped_through"] = event.dropped_through
    # orjson writes no raw newline, so the first newline ends the place.
    return orjson.dumps(place) + b"\n" + event.payload


def _event_from(record: int, data: bytes) -> SpooledEvent:
    head, _, payload = data.partition(b"\n")
    place = orjson.loads(head)
    return SpooledEvent(
        record=record,
        stream=place["stream"],
        session=place["session"],
        seq=place["seq"],
        kind=place["kind"],
        subject=place["subject"],
        payload=payload,
        produced_at=place["at"],
        dropped_through=place.get("dropped_through"),
    )


def _read_segment(path: Path, corrupt: list[str], is_last: bool) -> list[tuple[bytes, int, bytes]]:
    """The good records of one segment. At the first damaged one the rest is cut off (the
    file truncated there), reported in ``corrupt``."""
    data = path.read_bytes()
    records: list[tuple[bytes, int, bytes]] = []
    offset = 0
    while offset < len(data):
        damage = _damage_at(data, offset)
        if damage:
            where = "tail (a torn write)" if is_last else "middle"
            corrupt.append(
                f"{path.name}: {damage} at byte {offset}; {len(data) - offset} byte(s) of its "
                f"{where} cut off"
            )
            os.truncate(path, offset)
            break
        _, length, _ = RECORD_HEADER.unpack_from(data, offset)
        body = data[offset + RECORD_HEADER.size : offset + RECORD_HEADER.size + length]
        kind, record = BODY_HEAD.unpack_from(body)
        records.append((kind, record, body[BODY_HEAD.size :]))
        offset += RECORD_HEADER.size + length
    return records


def _damage_at(data: bytes, offset: int) -> str | None:
    """Why the record at ``offset`` cannot be trusted, or None."""
    if len(data) - offset < RECORD_HEADER.size:
        return "a short header"
    magic, length, crc = RECORD_HEADER.unpack_from(data, offset)
    if magic != MAGIC or length > MAX_BODY or length < BODY_HEAD.size:
        return "a bad header"
    start = offset + RECORD_HEADER.size
    body = data[start : start + length]
    if len(body) < length:
        return "a short record"
    if zlib.crc32(body) != crc:
        return "a checksum mismatch"
    kind = body[:1]
    if kind not in (EVENT, RESTATED, DONE):
        return "an unknown record type"
    if kind != DONE:
        try:
            _event_from(0, body[BODY_HEAD.size :])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return "an unreadable event"
    return None
