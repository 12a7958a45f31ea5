"""VideoSource's loop for files and for the clock, with a scripted opener (no decoder, no real
sleeps): a file that ends is ``ended``, one that cannot be read is ``failed`` with why; a
looped file starts over with its stream time going on; frames are counted from 0 across
reconnects; files are timed by their pts, live sources by the monotonic clock; a live
source's ``reconnecting`` detail says why, and a permanent error fails it with the error
alone (it gave up on nothing)."""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from types import SimpleNamespace
from typing import Any

import av.error
import pytest

import stream.sources.pyav
from stream.config import StreamConfig
from stream.sources.frames import FrameTime
from stream.sources.health import SourceHealth
from stream.sources.pyav import VideoSource
from tests.test_reconnect_policy import RecordingStop, Reports

FILE = "/videos/clip.mp4"
LIVE = "rtsp://cam.invalid/live"
TIME_BASE = Fraction(1, 50)


@dataclass
class Frame:
    pts: int | None
    time_base: Fraction | None = TIME_BASE


@dataclass
class Connection:
    """One open: frames with these pts, then (optionally) an error mid-read."""

    pts: list[int | None]
    then: BaseException | None = None


def run(
    steps: list[BaseException | Connection],
    monkeypatch: pytest.MonkeyPatch,
    url: str = FILE,
    stop: threading.Event | None = None,
    max_frames: int = 1000,
    **settings: Any,
) -> tuple[Reports, list[FrameTime], int]:
    """Run a source through ``steps`` (the last repeats); its reports, frame times, opens."""
    config = StreamConfig.model_validate({"id": "cam", "url": url, **settings})
    source = VideoSource(config)
    opens = itertools.count()
    opened: list[int] = []

    def open_() -> contextlib.nullcontext[Connection]:
        opened.append(next(opens))
        step = steps[min(len(opened) - 1, len(steps) - 1)]
        if isinstance(step, BaseException):
            raise step
        return contextlib.nullcontext(step)

    def decode(connection: Connection, stop: threading.Event) -> Iterator[Frame]:
        yield from (Frame(pts) for pts in connection.pts)
        if connection.then is not None:
            raise connection.then

    monkeypatch.setattr(source, "_open", open_)
    monkeypatch.setattr(source, "_decode", decode)
    monkeypatch.setattr(VideoSource, "_describe", staticmethod(lambda container: "fake"))
    monkeypatch.setattr(stream.sources.pyav.random, "uniform", lambda low, high: 1.0)
    reports = Reports()
    health = SourceHealth(config.stall_timeout_s, reports)
    stop = stop or RecordingStop()
    times: list[FrameTime] = []
    for _, frame_time in source.frames(stop, health, reports):
        times.append(frame_time)
        if len(times) >= max_frames:
            stop.set()
    return reports, times, len(opened)


def test_a_file_that_ends_is_ended_after_all_its_frames(monkeypatch: pytest.MonkeyPatch) -> None:
    reports, times, opens = run([Connection([0, 2, 4, 6, 8])], monkeypatch)
    assert opens == 1
    assert reports.states == ["connecting", "live", "ended"]
    assert "5 frames" in reports.events[-1][1]
    assert [t.index for t in times] == [0, 1, 2, 3, 4]


def test_a_file_is_timed_by_its_pts(monkeypatch: pytest.MonkeyPatch) -> None:
    _, times, _ = run([Connection([0, 2, 4, 10])], monkeypatch)
    assert [t.time_s for t in times] == [0.0, 0.04, 0.08, 0.2]
    assert [(t.pts, t.time_base) for t in times] == [(p, TIME_BASE) for p in (0, 2, 4, 10)]


def test_a_file_that_cannot_be_read_is_failed_with_why(monkeypatch: pytest.MonkeyPatch) -> None:
    reports, times, opens = run([OSError("No such file or directory")], monkeypatch)
    assert opens == 1 and times == []
    assert reports.states == ["connecting", "failed"]
    assert "No such file or directory" in reports.events[-1][1]


def test_a_file_that_breaks_mid_way_is_failed(monkeypatch: pytest.MonkeyPatch) -> None:
    broken = Connection([0, 2, 4], then=av.error.InvalidDataError(0, "bad packet"))
    reports, times, opens = run([broken], monkeypatch)
    assert opens == 1 and len(times) == 3
    assert reports.states == ["connecting", "live", "failed"]
    assert "bad packet" in reports.events[-1][1]


def test_a_looped_file_starts_over_and_its_time_goes_on(monkeypatch: pytest.MonkeyPatch) -> None:
    reports, times, opens = run([Connection([0, 2, 4])], monkeypatch, loop=True, max_frames=9)
    assert opens == 3
    assert [t.index for t in times] == list(range(9))
    # Each pass continues one frame step (0.04 s) after the last: 0-0.08, 0.12-0.2, 0.24-...
    assert [t.time_s for t in times] == pytest.approx(
        [0.0, 0.04, 0.08, 0.12, 0.16, 0.2, 0.24, 0.28, 0.32]
    )
    assert "ended" not in reports.states and "failed" not in reports.states


def test_a_live_source_is_timed_by_the_clock_not_by_pts(monkeypatch: pytest.MonkeyPatch) -> None:
    ticks = itertools.count()
    clock = SimpleNamespace(monotonic=lambda: 100 + 0.5 * next(ticks), time=time.time)
    monkeypatch.setattr(stream.sources.pyav, "time", clock)  # this module's clock only
    _, times, _ = run([Connection([0, 0, 0, 0])], monkeypatch, url=LIVE, max_frames=4)
    # The clock starts when the loop starts, then ticks 0.5 s at every frame's stamp.
    assert [t.time_s for t in times] == [0.5, 1.0, 1.5, 2.0]


def test_frames_are_counted_from_0_across_reconnects(monkeypatch: pytest.MonkeyPatch) -> None:
    _, times, opens = run(
        [Connection([0, 1]), OSError("refused"), Connection([0, 1, 2])],
        monkeypatch,
        url=LIVE,
        max_frames=5,
        reconnect_jitter=0,
    )
    assert opens == 3 and [t.index for t in times] == [0, 1, 2, 3, 4]


def test_reconnecting_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    stop = RecordingStop(max_waits=2)
    reports, _, _ = run(
        [OSError("connection refused"), Connection([0, 1])], monkeypatch, url=LIVE, stop=stop
    )
    details = [detail for state, detail, _ in reports.events if state == "reconnecting"]
    assert len(details) == 2
    assert "connection refused" in details[0]  # an error: the error
    assert "ended" in details[1] and "None" not in details[1]  # a clean end: that it ended


def test_a_clean_end_given_up_on_says_it_ended(monkeypatch: pytest.MonkeyPatch) -> None:
    reports, _, _ = run(
        [Connection([])], monkeypatch, url=LIVE, reconnect_max_attempts=1, reconnect_jitter=0
    )
    assert reports.states[-1] == "failed"
    assert "ended" in reports.events[-1][1] and "None" not in reports.events[-1][1]


def test_a_permanent_error_fails_with_the_error_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    # As PyAV raises it: FFmpeg's tag for the code ("[Errno 875574520]" in its str, which a
    # trial found in the event's detail).
    not_found = av.error.HTTPNotFoundError(875574520, "Server returned 404 Not Found", LIVE)
    reports, _, opens = run([not_found], monkeypatch, url=LIVE, reconnect_max_attempts=3)
    assert opens == 1 and reports.states == ["connecting", "failed"]
    assert reports.events[-1][1] == f"HTTPNotFoundError: Server returned 404 Not Found: {LIVE!r}"


def test_a_protocol_this_ffmpeg_lacks_fails_at_once() -> None:
    """Real FFmpeg (PyAV's own): no hls:// protocol (nor srt://). Retrying cannot help; it
    was retried for ever (found by a trial)."""
    config = StreamConfig.model_validate(
        {"id": "cam", "url": "hls://127.0.0.1:9/live.m3u8", "reconnect_max_attempts": 5}
    )
    reports = Reports()
    health = SourceHealth(config.stall_timeout_s, reports)
    assert list(VideoSource(config).frames(RecordingStop(), health, reports)) == []
    assert reports.states == ["connecting", "failed"]
    assert "ProtocolNotFoundError" in reports.events[-1][1]
