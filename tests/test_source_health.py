"""Status transitions of a live source, driven by a fake clock (the real-server version of
these faults is in test_rtsp_faults.py)."""

from __future__ import annotations

from typing import Any

from stream.sources.health import SourceHealth


class Recorder:
    def __init__(self) -> None:
        self.reports: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, state: str, detail: str, **fields: Any) -> None:
        self.reports.append((state, fields))

    @property
    def states(self) -> list[str]:
        return [state for state, _ in self.reports]


def health_at(clock: list[float], stall_timeout_s: float = 2.0) -> tuple[SourceHealth, Recorder]:
    recorder = Recorder()
    return SourceHealth(stall_timeout_s, recorder, clock=lambda: clock[0]), recorder


def test_first_frame_is_live_and_later_frames_report_nothing() -> None:
    clock = [0.0]
    health, recorder = health_at(clock)
    health.opened()
    for t in range(10):
        clock[0] = t * 0.5
        health.frame(lambda: "h264 320x240")
        health.check()
    assert recorder.states == ["live"]


def test_a_stall_is_reported_once_and_frames_afterwards_recover_with_the_gap() -> None:
    clock = [0.0]
    health, recorder = health_at(clock)
    health.opened()
    health.frame(lambda: "")
    clock[0] = 1.9
    health.check()
    assert recorder.states == ["live"]
    clock[0] = 2.1
    health.check()
    clock[0] = 5.0
    health.check()
    assert recorder.states == ["live", "stalled"]
    assert recorder.reports[1][1] == {"silent_s": 2.1}
    for t in (6.5, 6.54, 6.58):
        clock[0] = t
        health.frame(lambda: "")
    assert recorder.states == ["live", "stalled", "recovered"]
    assert recorder.reports[2][1] == {"gap_s": 6.5}


def test_one_frame_trickling_out_of_a_frozen_source_is_no_recovery() -> None:
    clock = [0.0]
    health, recorder = health_at(clock)
    health.opened()
    health.frame(lambda: "")
    clock[0] = 2.5
    health.check()  # stalled
    clock[0] = 3.0
    health.frame(lambda: "")  # a frame the reader had buffered
    clock[0] = 5.5
    health.check()  # silent again: still the same stall, not reported twice
    for t in (9.0, 9.04, 9.08):
        clock[0] = t
        health.frame(lambda: "")
    assert recorder.states == ["live", "stalled", "recovered"]
    assert recorder.reports[2][1] == {"gap_s": 9.0}


def test_reconnects_then_frames_recover_with_the_whole_outage_as_gap() -> None:
    clock = [0.0]
    health, recorder = health_at(clock)
    health.opened()
    health.frame(lambda: "")
    clock[0] = 1.0
    health.disconnected("stream ended", attempt=1, retry_in_s=0.5)
    clock[0] = 1.5
    health.check()  # not connected: a disconnected source is not "stalled"
    health.disconnected("Connection refused", attempt=2, retry_in_s=1.0)
    clock[0] = 4.0
    health.opened()
    for t in (4.2, 4.24, 4.28):
        clock[0] = t
        health.frame(lambda: "")
    assert recorder.states == ["live", "reconnecting", "reconnecting", "recovered"]
    assert recorder.reports[2][1] == {"attempt": 2, "retry_in_s": 1.0}
    assert recorder.reports[3][1] == {"gap_s": 4.2}


def test_an_open_source_that_never_sends_a_frame_is_stalled_then_live() -> None:
    clock = [0.0]
    health, recorder = health_at(clock)
    health.opened()
    clock[0] = 3.0
    health.check()
    clock[0] = 4.0
    health.frame(lambda: "h264")
    assert recorder.states == ["stalled", "live"]
