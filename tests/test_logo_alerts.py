"""Logo alert debouncing, by tables of what each keyframe's caption saw; and the alerts in a
running pipeline, published right after the caption that raised them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import fastjsonschema
import orjson
import pytest

from engine.captioner import CaptionOutcome
from stream.config import LogoAlertConfig, parse_config
from stream.delivery.events import AlertKind, CaptionEvent
from stream.delivery.logo_alerts import LogoTracker, open_name
from stream.delivery.nats_server import EmbeddedNatsServer
from stream.delivery.schemas import EVENT_SCHEMAS
from stream.runner import Runner
from stream.sample_clip import ClipSpec, write_clip
from stream.sources.frames import FrameTime
from tests.conftest import engine_and_nats
from tests.test_sequencer import ScriptedEngine

VALIDATE = {name.split("-")[0]: fastjsonschema.compile(s) for name, s in EVENT_SCHEMAS.items()}
WATCH = LogoAlertConfig(
    mode="watchlist",
    watchlist=[
        {"brand": "Nike", "aliases": ["swoosh"]},
        {"brand": "Adidas", "aliases": ["three stripes"]},
    ],
    appear_k=2,
    appear_n=3,
    gone_keyframes=3,
    gone_s=30,
)


def caption(
    seq: int, logos: list[str], time_s: float | None = None, ok: bool = True
) -> CaptionEvent:
    when = FrameTime(seq, None, None, seq * 2.0 if time_s is None else time_s, 1764079323.12)
    outcome = (
        CaptionOutcome({"logos": logos}, None, 1, 0.1)
        if ok
        else CaptionOutcome(None, {"reason": "invalid_json", "detail": "", "excerpt": ""}, 1, 0.1)
    )
    return CaptionEvent(seq, when, "cut", 1.0, outcome, "m", 0.0)


def run(
    config: LogoAlertConfig, keyframes: list[list[str]], times: list[float] | None = None
) -> list[tuple[int, AlertKind, str]]:
    """(keyframe number, appeared/disappeared, brand) for each alert."""
    tracker = LogoTracker(config)
    alerts = []
    for number, logos in enumerate(keyframes):
        time_s = times[number] if times else None
        for alert in tracker.observe(number, caption(number, logos, time_s)):
            alerts.append((number, alert.alert, alert.brand))
    return alerts


NIKE = "white Nike swoosh on the jersey"
ADIDAS = "black Adidas logo on the ball"


@pytest.mark.parametrize(
    ("name", "keyframes", "expected"),
    [
        ("steady", [[NIKE]] * 4, [(1, "appeared", "Nike")]),
        ("one keyframe only", [[], [NIKE], [], [], []], []),
        ("flicker stays open", [[NIKE], [], [NIKE], [], [NIKE], []], [(2, "appeared", "Nike")]),
        (
            "gone after three misses",
            [[NIKE], [NIKE], [], [], [], [NIKE]],
            [(1, "appeared", "Nike"), (4, "disappeared", "Nike")],
        ),
        (
            "two brands",
            [[NIKE], [NIKE, ADIDAS], [NIKE, ADIDAS], [ADIDAS], [ADIDAS], [ADIDAS]],
            [(1, "appeared", "Nike"), (2, "appeared", "Adidas"), (5, "disappeared", "Nike")],
        ),
        (
            "aliases, any case",
            [["a SWOOSH on a cap"], ["three stripes down the sleeve", "swoosh"], ["Three Stripes"]],
            [(1, "appeared", "Nike"), (2, "appeared", "Adidas")],
        ),
        ("whole words only", [["Nikeland banner"], ["Nikeland banner"], ["unswooshed"]], []),
    ],
)
def test_watchlist_debounce(name: str, keyframes: list[list[str]], expected: list) -> None:
    assert run(WATCH, keyframes) == expected, name


def test_gone_by_time_before_the_keyframe_count() -> None:
    alerts = run(WATCH, [[NIKE], [NIKE], []], times=[0.0, 1.0, 40.0])  # a 39 s gap
    assert alerts == [(1, "appeared", "Nike"), (2, "disappeared", "Nike")]


def test_failed_captions_are_no_evidence_either_way() -> None:
    tracker = LogoTracker(WATCH)
    events = [caption(0, [NIKE]), caption(1, [], ok=False), caption(2, [NIKE])]
    alerts = [a for n, e in enumerate(events) for a in tracker.observe(n, e)]
    assert [(a.alert, [k.seq for k in a.keyframes]) for a in alerts] == [("appeared", [0, 2])]
    assert alerts[0].matched == NIKE


def test_open_mode_names_logos_by_what_is_left_of_the_description() -> None:
    assert open_name("white BBC logo, lower left") == "bbc"
    assert open_name("BBC logo in the top right corner") == "bbc"
    assert open_name("red Coca-Cola logo on a can") == "coca-cola"
    assert open_name("small white logo") is None
    config = LogoAlertConfig(mode="open", appear_k=2, appear_n=2, gone_keyframes=1)
    alerts = run(config, [["white BBC logo, lower left"], ["BBC logo in the corner"], []])
    assert alerts == [(1, "appeared", "bbc"), (2, "disappeared", "bbc")]


def with_logos(logos: list[str]) -> str:
    return orjson.dumps(
        {
            "description": "d",
            "objects": [],
            "actions": [],
            "environment": "e",
            "content_type": "c",
            "specific_style": "s",
            "production_quality": "p",
            "summary": "s",
            "logos": logos,
        }
    ).decode()


async def test_alerts_follow_their_caption_in_the_streams_sequence(
    tmp_path: Path, nats_server: EmbeddedNatsServer
) -> None:
    spec = ClipSpec(shots=5, shot_frames=15)
    clip = write_clip(tmp_path / "five.mp4", spec)
    session_logos = [[NIKE], [NIKE], [], [], []]
    config = parse_config(
        {
            "streams": [{"id": "match", "url": str(clip)}],
            "keyframes": {"min_gap_s": 0.2},
            "alerts": {"logos": WATCH.model_dump()},
            **engine_and_nats(nats_server.url, "logo"),
        }
    )
    # A scripted engine: which logos a caption names is what this test is about, and the
    # real engine cannot be made to name chosen logos.
    events: list[dict[str, Any]] = []
    runner = Runner(config, events.append)
    engine = ScriptedEngine(
        {
            f"match-{runner.session}-{n}": (0.01, with_logos(logos), "stop")
            for n, logos in enumerate(session_logos)
        }
    )
    assert await runner.run(nats_server.url, engine=engine) == 0
    assert [e["seq"] for e in events] == list(range(len(events)))
    for event in events:
        VALIDATE[event["type"]](event)
    kinds = [e["type"] if e["type"] != "logo" else f"logo.{e['alert']}" for e in events]
    assert kinds == [
        "status",
        "status",
        "caption",
        "caption",
        "logo.appeared",
        "caption",
        "caption",
        "caption",
        "logo.disappeared",
        "status",
    ]
    appeared = next(e for e in events if e["type"] == "logo")
    assert appeared["brand"] == "Nike" and appeared["matched"] == NIKE
    assert [k["seq"] for k in appeared["keyframes"]] == [2, 3]


def test_appear_k_counts_only_the_last_appear_n_keyframes() -> None:
    # Seen at 0 and 3: two sightings, but never two within any three keyframes.
    assert run(WATCH, [[NIKE], [], [], [NIKE], [], [], [NIKE]]) == []


def test_a_short_miss_late_in_a_stream_is_not_gone() -> None:
    # Stream time far from 0: the gap since the last sighting (2 s), not the time, counts.
    alerts = run(WATCH, [[NIKE], [NIKE], [], [NIKE]], times=[20.0, 21.0, 23.0, 24.0])
    assert alerts == [(1, "appeared", "Nike")]


def test_gone_s_after_the_last_sighting_is_gone() -> None:
    alerts = run(WATCH, [[NIKE], [NIKE], []], times=[0.0, 1.0, 31.0])  # exactly gone_s (30)
    assert alerts == [(1, "appeared", "Nike"), (2, "disappeared", "Nike")]


def test_open_mode_alerts_carry_the_description_they_matched() -> None:
    config = LogoAlertConfig(mode="open", appear_k=2, appear_n=2, gone_keyframes=1)
    tracker = LogoTracker(config)
    seen = ["BBC logo in the corner", "white BBC logo, lower left"]
    alerts = [a for n, logos in enumerate(seen) for a in tracker.observe(n, caption(n, [logos]))]
    assert [(a.alert, a.brand, a.matched) for a in alerts] == [("appeared", "bbc", seen[1])]


def test_open_mode_names_keep_up_to_three_words_without_trailing_dots() -> None:
    assert open_name("Deutsche Bank logo") == "deutsche bank"
    assert open_name("Deutsche Telekom Bank Group logo") == "deutsche telekom bank"
    assert open_name("B.B.C. logo.") == "b.b.c"
    assert open_name("Sky's logo.") == "sky's"


def test_open_mode_forgets_logos_seen_once_long_ago() -> None:
    # One-off logos (a new one on every keyframe): memory stays bounded by appear_n.
    config = LogoAlertConfig(mode="open", appear_k=2, appear_n=3, gone_keyframes=1)
    tracker = LogoTracker(config)
    for n in range(50):
        assert tracker.observe(n, caption(n, [f"brand{n} logo"])) == []
        assert len(tracker._brands) <= config.appear_n
