"""The spool's file format on its own: what is written and not done comes back in order after
the process is gone; a torn or damaged record is cut off and reported, never replayed; done
segments are deleted; one process per slot; old events expire; the disk bound holds."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from pathlib import Path

import pytest

from stream.config import NatsConfig, SpoolConfig
from stream.delivery import spool as spool_module
from stream.delivery.spool import SpooledEvent, open_spool, spool_root

CONFIG = SpoolConfig(fsync="never")


def event(seq: int, stream: str = "cam", payload: bytes | None = None) -> SpooledEvent:
    body = payload if payload is not None else b'{"seq":%d,"text":"a\\nb"}' % seq
    subject = f"vidcap.{stream}.caption"
    return SpooledEvent(0, stream, "s1", seq, "caption", subject, body, time.time())


def segments(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.spool"))


async def written(root: Path, count: int) -> Path:
    """The one segment file of a spool with ``count`` events written, none done."""
    spool, _ = open_spool(root, CONFIG)
    for seq in range(count):
        spool.append(event(seq))
    await spool.close()
    (last,) = segments(root / "slot-0")
    return last


async def reopen(root: Path, config: SpoolConfig = CONFIG) -> tuple[list[SpooledEvent], list[str]]:
    spool, recovery = open_spool(root, config)
    await spool.close()
    return recovery.events, recovery.corrupt


async def test_what_is_not_done_comes_back_in_order_with_restatements(tmp_path: Path) -> None:
    spool, recovery = open_spool(tmp_path, CONFIG)
    assert recovery.events == [] and recovery.corrupt == []
    records = [spool.append(event(seq)) for seq in range(5)]
    spool.done(records[0])
    spool.done(records[3])
    spool.restate(records[1], event(1, payload=b'{"stand-in":true}'))
    await spool.close()

    events, corrupt = await reopen(tmp_path)
    assert corrupt == []
    assert [(e.seq, e.payload) for e in events] == [
        (1, b'{"stand-in":true}'),
        (2, b'{"seq":2,"text":"a\\nb"}'),
        (4, b'{"seq":4,"text":"a\\nb"}'),
    ]
    assert [e.record for e in events] == [records[1], records[2], records[4]]


async def test_a_torn_last_record_is_cut_off_and_reported(tmp_path: Path) -> None:
    last = await written(tmp_path, 3)
    whole = last.stat().st_size
    os.truncate(last, whole - 5)  # the last write reached the disk in part

    events, corrupt = await reopen(tmp_path)
    assert [e.seq for e in events] == [0, 1]
    assert len(corrupt) == 1 and "short record" in corrupt[0] and "torn" in corrupt[0]
    # Cut off for good: the next run finds a clean spool.
    events, corrupt = await reopen(tmp_path)
    assert [e.seq for e in events] == [0, 1] and corrupt == []


async def test_a_flipped_byte_fails_the_checksum(tmp_path: Path) -> None:
    last = await written(tmp_path, 3)
    data = bytearray(last.read_bytes())
    data[len(data) // 2] ^= 0x40  # inside the second record
    last.write_bytes(bytes(data))

    events, corrupt = await reopen(tmp_path)
    assert [e.seq for e in events] == [0]
    assert "checksum mismatch" in corrupt[0]


async def test_garbage_after_the_records_is_not_replayed(tmp_path: Path) -> None:
    last = await written(tmp_path, 1)
    with last.open("ab") as file:
        file.write(b"\x00" * 100)

    events, corrupt = await reopen(tmp_path)
    assert [e.seq for e in events] == [0]
    assert "bad header" in corrupt[0]


async def test_done_segments_are_deleted_and_an_empty_spool_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spool_module, "SEGMENT_BYTES", 1000)
    spool, _ = open_spool(tmp_path, CONFIG)
    records = [spool.append(event(seq, payload=b"x" * 300)) for seq in range(12)]
    assert len(segments(tmp_path / "slot-0")) >= 4
    for record in records[:-1]:
        spool.done(record)
    # Left: the segment of the last event (not done yet) and the one being written.
    assert len(segments(tmp_path / "slot-0")) == 2
    assert spool.events == 1
    spool.done(records[-1])
    await spool.close()
    events, _ = await reopen(tmp_path)
    assert events == []
    assert segments(tmp_path / "slot-0") == []


async def test_a_live_event_keeps_its_segment_and_everything_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spool_module, "SEGMENT_BYTES", 1000)
    spool, _ = open_spool(tmp_path, CONFIG)
    records = [spool.append(event(seq, payload=b"x" * 300)) for seq in range(12)]
    for record in records[1:]:
        spool.done(record)
    await spool.close()
    events, _ = await reopen(tmp_path)
    assert [e.seq for e in events] == [0]


async def test_a_second_process_takes_the_next_slot(tmp_path: Path) -> None:
    first, _ = open_spool(tmp_path, CONFIG)
    first.append(event(0))
    second, recovery = open_spool(tmp_path, CONFIG)
    assert second.directory.name == "slot-1" and recovery.events == []
    await second.close()
    await first.close()
    # The slot is free again once its holder is gone, and its events are there.
    events, _ = await reopen(tmp_path)
    assert [e.seq for e in events] == [0]


async def test_events_older_than_max_age_are_not_delivered(tmp_path: Path) -> None:
    spool, _ = open_spool(tmp_path, CONFIG)
    spool.append(dataclasses.replace(event(0), produced_at=time.time() - 7200))
    spool.append(event(1))
    await spool.close()
    spool, recovery = open_spool(tmp_path, SpoolConfig(fsync="never", max_age_s=3600))
    await spool.close()
    assert [e.seq for e in recovery.events] == [1] and recovery.expired == 1


async def test_fsync_always_returns_once_on_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    real_fsync = os.fsync

    def counted_fsync(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", counted_fsync)
    spool, _ = open_spool(tmp_path, SpoolConfig(fsync="always"))
    spool.start()
    for seq in range(3):
        spool.append(event(seq))
        await asyncio.wait_for(spool.durable(), 5)
        assert synced, "durable() returned before any fsync"
        synced.clear()
    await spool.close()


async def test_the_disk_bound(tmp_path: Path) -> None:
    spool, _ = open_spool(tmp_path, SpoolConfig(fsync="never", max_bytes=16 << 20))
    big = b"x" * (1 << 20)
    appended = 0
    while spool.has_room(len(big)):
        spool.append(event(appended, payload=big))
        appended += 1
    assert appended == 15 and spool.size <= spool.max_bytes
    assert spool.fill > 0.9
    await spool.close()


def test_each_destination_has_its_own_folder(tmp_path: Path) -> None:
    config = SpoolConfig(path=tmp_path)
    a = spool_root(config, NatsConfig(url="nats://a:4222"), tmp_path)
    b = spool_root(config, NatsConfig(url="nats://b:4222"), tmp_path)
    c = spool_root(config, NatsConfig(url="nats://a:4222", stream_name="OTHER"), tmp_path)
    assert len({a, b, c}) == 3 and all(p.parent == tmp_path for p in (a, b, c))
