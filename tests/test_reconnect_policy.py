"""The README's reconnect policy for live sources, on VideoSource's own loop with a scripted
opener and a recording stop event (no real sleeps, no server): delays double from
``reconnect_initial_s`` up to ``reconnect_max_s``, each times a jitter factor drawn from
[1 - j, 1 + j]; frames flowing reset the doubling; ``reconnect_max_attempts`` failed
reconnects in a row end the stream as ``failed``; 401, 403 and 404 fail it at once."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from fractions import Fraction
from typing import Any

import av.error
import pytest

import stream.sources.pyav
from stream.config import StreamConfig
from stream.sources.health import SourceHealth
from stream.sources.pyav import VideoSource

URL = "rtsp://cam.invalid/live"


class RecordingStop(threading.Event):
    """A stop event whose waits return at once and are recorded; set after ``max_waits``."""

    def __init__(self, max_waits: int = 100) -> None:
        super().__init__()
        self.waits: list[float] = []
        self._max_waits = max_waits

    def wait(self, timeout: float | None = None) -> bool:
        assert timeout is not None
        self.waits.append(timeout)
        if len(self.waits) >= self._max_waits:
            self.set()
        return self.is_set()


class FakeFrame:
    pts = 0
    time_base = Fraction(1, 25)


class Script:
    """What each open does: an exception to raise, or a number of frames to deliver."""

    def __init__(self, steps: list[BaseException | int]) -> None:
        self.steps = steps
        self.opens = 0

    def open(self) -> contextlib.nullcontext[object]:
        step = self.steps[min(self.opens, len(self.steps) - 1)]
        self.opens += 1
        if isinstance(step, BaseException):
            raise step
        return contextlib.nullcontext(step)

    @staticmethod
    def decode(frames: object, stop: threading.Event) -> Iterator[FakeFrame]:
        assert isinstance(frames, int)
        yield from (FakeFrame() for _ in range(frames))


class Reports:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict[str, Any]]] = []

    def __call__(self, state: str, detail: str, **fields: Any) -> None:
        self.events.append((state, detail, fields))

    @property
    def states(self) -> list[str]:
        return [state for state, _, _ in self.events]


def run_source(
    steps: list[BaseException | int],
    monkeypatch: pytest.MonkeyPatch,
    stop: RecordingStop,
    jitter: tuple[float, float] | None = None,
    **settings: Any,
) -> tuple[Reports, list[tuple[float, float]], int]:
    """Run a live source through ``steps``; returns its reports, the jitter ranges drawn and
    how often it opened. ``jitter`` None draws the factor 1.0, else it picks an end."""
    config = StreamConfig.model_validate({"id": "cam", "url": URL, **settings})
    script = Script(steps)
    source = VideoSource(config)
    monkeypatch.setattr(source, "_open", script.open)
    monkeypatch.setattr(source, "_decode", script.decode)
    monkeypatch.setattr(VideoSource, "_describe", staticmethod(lambda container: "fake"))
    monkeypatch.setattr(VideoSource, "_is_recording", lambda self, container: False)
    drawn: list[tuple[float, float]] = []

    def uniform(low: float, high: float) -> float:
        drawn.append((low, high))
        return 1.0 if jitter is None else jitter[len(drawn) % 2]

    monkeypatch.setattr(stream.sources.pyav.random, "uniform", uniform)
    reports = Reports()
    health = SourceHealth(config.stall_timeout_s, reports)
    for _ in source.frames(stop, health, reports):
        pass
    return reports, drawn, script.opens


def test_delays_double_up_to_the_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    stop = RecordingStop(max_waits=7)
    run_source(
        [OSError("refused")],
        monkeypatch,
        stop,
        reconnect_initial_s=0.5,
        reconnect_max_s=6,
        reconnect_jitter=0,
    )
    assert stop.waits == [0.5, 1.0, 2.0, 4.0, 6.0, 6.0, 6.0]


def test_each_delay_has_its_own_jitter_within_the_configured_share(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stop = RecordingStop(max_waits=4)
    _, drawn, _ = run_source(
        [OSError("refused")],
        monkeypatch,
        stop,
        jitter=(0.75, 1.25),
        reconnect_initial_s=1,
        reconnect_max_s=30,
        reconnect_jitter=0.25,
    )
    assert drawn == [(0.75, 1.25)] * 4
    assert stop.waits == [1 * 1.25, 2 * 0.75, 4 * 1.25, 8 * 0.75]


def test_jitter_really_spreads_cameras_apart(monkeypatch: pytest.MonkeyPatch) -> None:
    config = StreamConfig.model_validate({"id": "cam", "url": URL, "reconnect_jitter": 0.2})
    delays = {VideoSource(config)._backoff(3) for _ in range(50)}
    assert len(delays) > 40 and all(4 * 0.8 <= d <= 4 * 1.2 for d in delays)


def test_frames_flowing_reset_the_doubling(monkeypatch: pytest.MonkeyPatch) -> None:
    stop = RecordingStop(max_waits=5)
    refused = OSError("refused")
    reports, _, _ = run_source(
        [refused, refused, refused, 5, refused, refused],
        monkeypatch,
        stop,
        reconnect_initial_s=1,
        reconnect_jitter=0,
    )
    # Three failures (1, 2, 4), then a connection that delivered frames and ended: from 1 again.
    assert stop.waits == [1, 2, 4, 1, 2]
    attempts = [fields["attempt"] for state, _, fields in reports.events if state == "reconnecting"]
    assert attempts == [1, 2, 3, 1, 2]
    assert "live" in reports.states


def test_max_attempts_consecutive_failures_then_failed(monkeypatch: pytest.MonkeyPatch) -> None:
    stop = RecordingStop()
    reports, _, opens = run_source(
        [OSError("refused")],
        monkeypatch,
        stop,
        reconnect_initial_s=1,
        reconnect_jitter=0,
        reconnect_max_attempts=3,
    )
    assert opens == 4  # the first open and three reconnects
    assert stop.waits == [1, 2, 4]
    assert reports.states == [
        "connecting",
        "reconnecting",
        "reconnecting",
        "reconnecting",
        "failed",
    ]
    assert reports.events[-1][1] == "OSError: refused; gave up after 3 attempts"


def test_zero_max_attempts_retries_forever(monkeypatch: pytest.MonkeyPatch) -> None:
    stop = RecordingStop(max_waits=50)
    reports, _, opens = run_source(
        [OSError("refused")], monkeypatch, stop, reconnect_initial_s=1, reconnect_jitter=0
    )
    assert opens == 50 and "failed" not in reports.states


@pytest.mark.parametrize(
    "error",
    [
        av.error.HTTPUnauthorizedError(0, "401"),
        av.error.HTTPForbiddenError(0, "403"),
        av.error.HTTPNotFoundError(0, "404"),
    ],
)
def test_401_403_404_fail_at_once(error: Exception, monkeypatch: pytest.MonkeyPatch) -> None:
    stop = RecordingStop()
    reports, _, opens = run_source([error], monkeypatch, stop, reconnect_max_attempts=0)
    assert opens == 1 and stop.waits == []
    assert reports.states == ["connecting", "failed"]
    assert type(error).__name__ in reports.events[-1][1]


def test_other_http_errors_are_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    stop = RecordingStop(max_waits=2)
    reports, _, opens = run_source(
        [av.error.HTTPBadRequestError(0, "400")], monkeypatch, stop, reconnect_jitter=0
    )
    assert opens == 2 and reports.states == ["connecting", "reconnecting", "reconnecting"]


def test_a_source_error_is_said_once_by_the_state_it_leads_to(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A trial saw each retry's error three times: the source's WARNING, the ingest's
    `reconnecting (<error>)` WARNING, and the status event. The source now leaves it to the
    state (the ingest logs each state with its detail)."""
    reports, _, _ = run_source(
        [OSError("refused")], monkeypatch, RecordingStop(3), reconnect_max_attempts=2
    )
    assert reports.events[1][:2] == ("reconnecting", "OSError: refused; attempt 1 in 1.0 s")
    said = [r for r in caplog.records if r.name == "stream.sources.pyav"]
    assert all(r.levelno < logging.WARNING for r in said), [r.getMessage() for r in said]
