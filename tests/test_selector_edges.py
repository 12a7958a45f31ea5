"""The keyframe selector's numbers and edges, on synthetic pictures: the scores against their
definitions (computed here again with numpy from the frames' planes), the blend test against
a least-squares fit, and the selector's thresholds where a score lands exactly on them."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np
import pytest

from stream.config import KeyframeConfig
from stream.keyframes.features import FLAT_STD, FrameFeatures, features_from_planes
from stream.keyframes.kernels import CHROMA_U, CHROMA_V, LUMA, NORMALISED
from stream.keyframes.selector import (
    _CHROMA_WEIGHT,
    _FULL_CONTRAST_STD,
    _LUMA_WEIGHT,
    _MIXTURE_FIT,
    _MIXTURE_GAIN,
    _MIXTURE_SHARE,
    KeyframeSelector,
    Selection,
    cut_score,
    histogram_change,
    is_mixture,
    scene_change,
    structure_change,
)
from tests.test_keyframes import FPS, H, W, features, shot, texture


def select(
    frames: Sequence[FrameFeatures], times: Sequence[int] | None = None, **settings: float
) -> list[Selection]:
    """Every selection of a run, the end's flush included (stream time: ``times`` or FPS)."""
    config = KeyframeConfig(**{"min_gap_s": 0.2, "max_interval_s": 3600, **settings})
    selector = KeyframeSelector(config)
    chosen: list[Selection] = []
    for index, frame in enumerate(frames):
        time_s = times[index] if times is not None else index / FPS
        chosen += selector.process_frame(index, time_s, frame)
    return chosen + selector.flush()


def picks(chosen: list[Selection]) -> list[tuple[int, str]]:
    return [(s.index, s.reason) for s in chosen]


def decisions(frames: Sequence[FrameFeatures], **settings: float) -> list[tuple[int, int]]:
    """(frame being fed when the selector decided, keyframe chosen) for each selection after
    the start: a gradual transition's keyframe is decided once it has settled, but taken
    where the new shot first shows fully."""
    config = KeyframeConfig(**{"min_gap_s": 0.2, "max_interval_s": 3600, **settings})
    selector = KeyframeSelector(config)
    decided = []
    for index, frame in enumerate(frames):
        chosen = selector.process_frame(index, index / FPS, frame)
        decided += [(index, s.index) for s in chosen if s.reason != "start"]
    return decided


# ---- the scores, against their definitions ----


def reference_scores(a: FrameFeatures, b: FrameFeatures) -> tuple[float, float, float]:
    """structure_change, scene_change and cut_score as their docstrings define them."""

    def mean_abs(*planes: int) -> float:
        return float(np.mean([np.abs(a.packed[p] - b.packed[p]) for p in planes], dtype=np.float64))

    structure = min(100.0, 100.0 * mean_abs(NORMALISED) / (2 / math.sqrt(math.pi)))
    luma = mean_abs(LUMA) * 100 / 255
    chroma = mean_abs(CHROMA_U, CHROMA_V) * 100 / 255  # U and V together
    pixel = min(100.0, max(_LUMA_WEIGHT * luma, _CHROMA_WEIGHT * chroma))
    trust = (min(a.std, b.std) - FLAT_STD) / (_FULL_CONTRAST_STD - FLAT_STD)
    trust = min(1.0, max(0.0, trust))
    scene = trust * structure + (1 - trust) * pixel
    return structure, scene, max(scene, pixel)


def related(contrast: float, share: float, level: float = 128) -> np.ndarray:
    """A picture partly like texture(30) (``share``), partly unrelated, at a given contrast."""
    mixed = texture(30) * share + texture(31) * (1 - share)
    return (mixed - mixed.mean()) / mixed.std() * contrast + level


PAIRS = {
    "full contrast": (features(related(40, 1)), features(related(40, 0.6))),
    "low contrast": (features(related(9, 1)), features(related(11, 0.5, 110))),
    "flat, brightness": (features(related(3, 1, 100)), features(related(3, 1, 130))),
    "flat, colour": (features(related(3, 1), 128, 128), features(related(3, 1), 100, 170)),
    "colour and structure": (features(related(40, 1)), features(related(25, 0.8), 90, 150)),
    "mid contrast": (features(related(14, 1)), features(related(12, 0.3, 140), 120, 140)),
}


@pytest.mark.parametrize("name", list(PAIRS))
def test_scores_match_their_definitions(name: str) -> None:
    a, b = PAIRS[name]
    structure, scene, cut = reference_scores(a, b)
    assert structure_change(a, b) == pytest.approx(structure, rel=1e-4, abs=1e-4)
    assert scene_change(a, b) == pytest.approx(scene, rel=1e-4, abs=1e-4)
    assert cut_score(a, b) == pytest.approx(cut, rel=1e-4, abs=1e-4)


def test_the_pairs_cover_every_trust_and_which_change_dominates() -> None:
    """The pairs above are not all alike: trust 0, 1 and between; luma and chroma leading."""
    trusts = {
        round(min(1, max(0, (min(a.std, b.std) - FLAT_STD) / 10)), 1) for a, b in PAIRS.values()
    }
    assert {0.0, 1.0} < trusts
    assert any(scene_change(a, b) != cut_score(a, b) for a, b in PAIRS.values())
    assert all(0 < structure_change(a, b) < 100 for a, b in list(PAIRS.values())[:2])


def test_scores_are_capped_at_100() -> None:
    picture = texture(32)
    negative = features(255 - picture)  # anti-correlated: more than "unrelated"
    assert structure_change(features(picture), negative) == 100.0
    black, white = features(np.zeros((H, W)), 0, 0), features(np.full((H, W), 255.0), 255, 255)
    assert cut_score(black, white) == 100.0
    assert scene_change(black, white) == 100.0


def test_pictures_of_different_sizes_differ_fully() -> None:
    small, large = features(texture(33)), features(texture(33, 48, 64))
    assert structure_change(small, large) == 100.0
    assert scene_change(small, large) == 100.0
    assert cut_score(small, large) == 100.0


def test_histogram_change_is_0_for_the_same_colours_and_100_for_disjoint_ones() -> None:
    black, white = features(np.zeros((H, W)), 0, 0), features(np.full((H, W), 255.0), 255, 255)
    assert histogram_change(black, white) == pytest.approx(100.0)
    picture = texture(34)
    assert histogram_change(features(picture), features(picture[::-1, ::-1])) == 0.0
    # Half the luma moved to another bin, U and V unchanged: a sixth of the full range.
    half = np.zeros((H, W))
    half[: H // 2] = 255
    assert histogram_change(black, features(half, 0, 0)) == pytest.approx(100 / 6, rel=1e-5)


# ---- is_mixture against a least-squares fit ----


def fitted_blend(middle: FrameFeatures, old: FrameFeatures, new: FrameFeatures) -> dict[str, float]:
    """middle ~ w_old * old + w_new * new + c (luma, least squares): R^2 of the fit, the best
    R^2 of one picture alone, and the two weights."""
    y = middle.luma.ravel().astype(np.float64)
    a, b = (p.luma.ravel().astype(np.float64) for p in (old, new))
    design = np.column_stack([a, b, np.ones_like(a)])
    coefficients, *_ = np.linalg.lstsq(design, y, rcond=None)
    residual = y - design @ coefficients
    fit = 1 - residual @ residual / np.sum((y - y.mean()) ** 2)
    alone = max(np.corrcoef(y, a)[0, 1] ** 2, np.corrcoef(y, b)[0, 1] ** 2)
    return {"fit": fit, "gain": fit - alone, "w_old": coefficients[0], "w_new": coefficients[1]}


@functools.cache
def blends() -> list[tuple[str, FrameFeatures, FrameFeatures, FrameFeatures]]:
    rng = np.random.default_rng(35)
    cases = []
    a, b = texture(36), texture(37)
    like, unlike = a * 0.6 + b * 0.4, (255 - a) * 0.6 + b * 0.4  # correlated with a: + and -
    ends = {  # the weights are raw: ends of different contrast tell them from correlations
        "unrelated": (a, b),
        "new one dimmer": (a, b * 0.5 + 60),
        "old faint": (a * 0.2 + 100, b),
        "new faint": (a, b * 0.2 + 100),
        "old very faint": (a * 0.1 + 115, b),
        "new very faint": (a, b * 0.1 + 115),
        "related": (a, like),
        "related, new faint": (a, like * 0.3 + 90),
        "anti-related": (a, unlike),
        "anti-related, old faint": (a * 0.3 + 90, unlike),
        "anti-related, old very faint": (a * 0.1 + 115, unlike),
        "anti-related, new faint": (a, unlike * 0.3 + 90),
    }
    for name, (old, new) in ends.items():
        for weight in np.linspace(-0.6, 1.6, 45):  # outside 0-1: one weight negative
            for noise in (0.0, 10.0, 20.0, 30.0):
                blend = old * (1 - weight) + new * weight + rng.normal(0, noise, old.shape)
                cases.append(
                    (
                        f"{name} w={weight:.2f} noise={noise}",
                        features(blend),
                        features(old),
                        features(new),
                    )
                )
    wide = texture(38, H, W + 40)
    for step in (1, 3, 6):  # a pan: the middle view is no blend of its ends
        views = [features(wide[:, x : x + W]) for x in (0, step, 2 * step)]
        cases.append((f"pan {step}", views[1], views[0], views[2]))
    return cases


def test_is_mixture_agrees_with_a_least_squares_fit() -> None:
    decided = []
    for name, middle, old, new in blends():
        fit = fitted_blend(middle, old, new)
        edges = (
            fit["fit"] - _MIXTURE_FIT,
            fit["gain"] - _MIXTURE_GAIN,
            min(fit["w_old"], fit["w_new"]) - _MIXTURE_SHARE,
        )
        if min(abs(edge) for edge in edges) < 2e-3:
            continue  # float32 against float64 could land on either side
        expected = min(edges) >= 0
        assert is_mixture(middle, old, new) == expected, (name, fit)
        decided.append(expected)
    # Both answers occur, and for every reason (the fit, the gain and the share each decide).
    assert decided.count(True) >= 10 and decided.count(False) >= 10


def test_is_mixture_reasons_each_decide_somewhere() -> None:
    """Each of the three conditions alone rejects some of the cases above."""
    alone_rejects = {"fit": 0, "gain": 0, "share": 0}
    for _name, middle, old, new in blends():
        fit = fitted_blend(middle, old, new)
        ok = {
            "fit": fit["fit"] >= _MIXTURE_FIT + 2e-3,
            "gain": fit["gain"] >= _MIXTURE_GAIN + 2e-3,
            "share": min(fit["w_old"], fit["w_new"]) >= _MIXTURE_SHARE + 2e-3,
        }
        failed = [k for k, v in ok.items() if not v]
        if len(failed) == 1:
            alone_rejects[failed[0]] += 1
    assert all(alone_rejects.values()), alone_rejects


def test_is_mixture_needs_three_pictures_of_one_size_with_structure() -> None:
    old, new = features(texture(39)), features(texture(40))
    middle = features(texture(39) * 0.5 + texture(40) * 0.5)
    assert is_mixture(middle, old, new)
    assert not is_mixture(features(texture(41, 48, 64)), old, new)  # another size
    assert not is_mixture(features(np.full((H, W), 128.0)), old, new)  # flat: no structure
    assert not is_mixture(middle, old, features(np.full((H, W), 90.0)))
    assert not is_mixture(middle, old, old)  # the same picture at both ends: nothing to blend


# ---- the selector's edges ----


def test_the_start_is_the_first_frame_with_score_0_at_its_time() -> None:
    selector = KeyframeSelector(KeyframeConfig())
    assert selector.process_frame(7, 3.25, features(texture(42))) == [
        Selection(7, 3.25, "start", 0.0)
    ]


def test_a_cut_carries_its_score_rounded_to_3_decimals() -> None:
    old, new = features(related(40, 1)), features(related(40, 0.3, 150))
    chosen = select([old] * 20 + [new] * 20)
    assert picks(chosen) == [(0, "start"), (20, "cut")]
    assert chosen[1].time_s == 20 / FPS
    assert chosen[1].score == round(cut_score(old, new), 3)
    assert chosen[1].score != round(chosen[1].score)  # the decimals are kept


def test_a_heartbeat_carries_the_last_frame_change_as_its_score() -> None:
    frames = shot(43, 30, noise=8.0)
    chosen = select(frames, max_interval_s=1.0)
    assert picks(chosen) == [(0, "start"), (25, "interval")]
    assert chosen[1].score == round(cut_score(frames[24], frames[25]), 3)


def test_flush_confirms_a_cut_still_under_flash_watch() -> None:
    frames = shot(44, 30) + shot(45, 2)  # the stream ends 2 frames after the cut
    assert picks(select(frames)) == [(0, "start"), (30, "cut")]
    # ... but not inside min_gap_s of the last keyframe.
    assert picks(select(shot(44, 3) + shot(45, 2), min_gap_s=1.0)) == [(0, "start")]


def test_a_change_scoring_exactly_the_threshold_can_be_a_cut() -> None:
    old, new = features(related(40, 1)), features(related(40, 0.3, 150), 100, 150)
    exact = cut_score(old, new)
    chosen = select([old] * 3 + [new] * 10, times=range(13), threshold=exact)
    assert picks(chosen) == [(0, "start"), (3, "cut")]


def test_a_colour_change_of_exactly_the_histogram_threshold_confirms_a_cut() -> None:
    # At frame 3 too few scores are known for an outlier: only the colour change can tell.
    old, new = features(related(40, 1)), features(related(40, 0.3, 150), 100, 150)
    exact = histogram_change(old, new)
    chosen = select([old] * 3 + [new] * 10, times=range(13), histogram_threshold=exact)
    assert picks(chosen) == [(0, "start"), (3, "cut")]


def test_a_same_colours_cut_needs_history_to_be_an_outlier() -> None:
    picture = texture(46)
    old, rearranged = features(picture), features(picture[::-1, ::-1])
    assert histogram_change(old, rearranged) == 0.0
    assert picks(select([old] * 3 + [rearranged] * 10)) == [(0, "start")]
    assert picks(select([old] * 20 + [rearranged] * 10)) == [(0, "start"), (20, "cut")]


def test_an_outlier_needs_adaptive_ratio_times_the_average_and_at_least_that_ratio() -> None:
    picture = texture(46)
    old, rearranged = features(picture), features(np.roll(picture, 3, axis=1))
    assert histogram_change(old, rearranged) == 0.0
    score = cut_score(old, rearranged)
    # After a still shot (average 0) the bar is adaptive_ratio itself (the average counts as
    # at least 1): a score of exactly that is an outlier.
    frames = [old] * 20 + [rearranged] * 10
    assert picks(select(frames, adaptive_ratio=score)) == [(0, "start"), (20, "cut")]
    assert picks(select(frames, adaptive_ratio=score + 0.01)) == [(0, "start")]


def test_the_outlier_average_is_over_the_last_8_frames_only() -> None:
    picture = texture(47)
    moving = shot(48, 40, noise=16.0)  # scores ~20: below the threshold, never a cut
    still = [features(picture)] * 9
    frames = moving + still + [features(picture[::-1, ::-1])] * 10
    # Over the whole run the average is ~17 (x7 > 100: no outlier); over the still 8, 0.
    assert picks(select(frames, adaptive_ratio=7)) == [(0, "start"), (49, "cut")]


def test_min_gap_counts_a_cut_exactly_min_gap_after_the_last_keyframe() -> None:
    frames = shot(49, 10) + shot(50, 4) + shot(51, 10)  # cuts at 10 and 14, 1 frame a second
    chosen = select(frames, times=range(len(frames)), min_gap_s=4)
    assert picks(chosen) == [(0, "start"), (10, "cut"), (14, "cut")]


def test_a_moderate_cut_below_twice_the_threshold_is_a_cut() -> None:
    old, new = features(related(40, 1)), features(related(40, 0.75, 128), 110, 150)
    assert 30 <= cut_score(old, new) < 60 and histogram_change(old, new) >= 15
    assert picks(select([old] * 20 + [new] * 20)) == [(0, "start"), (20, "cut")]


def test_a_flash_fading_back_to_almost_the_old_picture_is_no_cut() -> None:
    base = texture(52)
    after = np.clip(base + 15, 0, 255)  # a little brighter than before: a third of a cut
    assert 10 < cut_score(features(base), features(after)) < 15
    flash = base * 0.3 + 200
    fading = [features(flash * (1 - k / 4) + after * (k / 4)) for k in range(4)]
    frames = [features(base)] * 30 + fading + [features(after)] * 30
    assert picks(select(frames, flash_frames=4)) == [(0, "start")]
    # Back means closer than half the threshold: exactly half is still a new picture.
    exact = 2 * cut_score(frames[0], frames[-1])
    assert picks(select(frames, flash_frames=4, threshold=exact)) == [(0, "start"), (30, "cut")]


def test_a_cut_followed_by_a_smaller_change_is_still_a_cut() -> None:
    old, new = features(related(40, 1)), features(related(40, 0, 150), 100, 150)
    settled = features(related(40, 0.0, 150) * 0.64 + related(40, 1) * 0.36, 100, 150)
    score, then = cut_score(old, new), cut_score(new, settled)
    assert max(30, score / 3) <= then < score / 2
    assert picks(select([old] * 20 + [new, settled] + [settled] * 20)) == [
        (0, "start"),
        (20, "cut"),
    ]


def test_a_change_that_keeps_going_as_fast_is_no_cut() -> None:
    # Four unrelated pictures in a row: each step as large as the first.
    flicker = [features(texture(60 + k), 100 + 10 * k, 150) for k in range(4)]
    chosen = picks(select([features(texture(59))] * 20 + flicker + [flicker[-1]] * 20))
    assert (20, "cut") not in chosen


def test_a_further_change_of_exactly_the_threshold_makes_a_cut_a_pan() -> None:
    old, new = features(related(40, 1)), features(related(40, 0, 150), 100, 150)
    settled = features(related(40, 0.0, 150) * 0.4 + related(40, 1) * 0.6, 100, 150)
    then = cut_score(new, settled)
    assert cut_score(old, new) / 2 <= then <= cut_score(old, new)
    chosen = picks(select([old] * 20 + [new, settled] + [settled] * 20, threshold=then))
    assert (20, "cut") not in chosen


def test_a_stream_that_starts_on_black_gets_the_faded_in_picture() -> None:
    picture = texture(53)
    black = [features(np.zeros((H, W)))] * 10
    fade_in = [features(picture * (k / 20)) for k in range(1, 21)]  # the last one is picture
    frames = black + fade_in + [features(picture)] * 20
    # Decided 3 frames after the picture stops brightening; the keyframe is the fade's end.
    assert decisions(frames) == [(29 + 3, 29)]
    assert picks(select(frames)) == [(0, "start"), (29, "transition")]
    # The same with one black frame: the fade-in is no settled picture, however early.
    assert decisions(black[:1] + fade_in + [features(picture)] * 20) == [(20 + 3, 20)]


def test_after_a_fade_through_black_3_still_frames_end_the_fade_in() -> None:
    old, new = texture(54), texture(55)
    out = [features(old * (1 - k / 20)) for k in range(1, 21)]
    black = [features(np.zeros((H, W)))] * 10
    fade_in = [features(new * (k / 20)) for k in range(1, 21)]  # ends at frame 79
    frames = [features(old)] * 30 + out + black + fade_in + [features(new)] * 30
    assert decisions(frames) == [(79 + 3, 79)]


def test_a_dissolve_to_exactly_threshold_difference_is_a_transition() -> None:
    a, b = texture(8), texture(9) * 0.6 + 60
    mix = [features(a * (1 - k / 25) + b * (k / 25)) for k in range(1, 25)]
    frames = [features(a)] * 30 + mix + [features(b)] * 30
    exact = scene_change(frames[0], frames[-1])
    chosen = picks(select(frames, threshold=exact))
    assert len(chosen) == 2 and chosen[1][1] == "transition"


def test_a_new_shot_whose_colours_keep_drifting_never_settles() -> None:
    # A dissolve into a shot whose colour crosses a histogram bin every few frames: its look
    # keeps moving, so the transition is not over while it drifts.
    a, b = texture(8), texture(9) * 0.6 + 60
    mix = [features(a * (1 - k / 25) + b * (k / 25)) for k in range(1, 25)]
    drift = [features(b, 128, 128 + 6 * k) for k in range(1, 21)]  # ends at frame 73
    frames = [features(a)] * 30 + mix + drift
    assert picks(select(frames)) == [(0, "start")]
    # Once the colour stops, the new shot is decided within settle_frames (6); its keyframe
    # is a frame of the new shot (the drift is its colour, not the dissolve).
    ((decided, keyframe),) = decisions(frames + [drift[-1]] * 10)
    assert 73 < decided <= 73 + 6 and 53 < keyframe <= decided


def test_a_held_back_cut_whose_picture_is_gone_is_dropped_for_good() -> None:
    # A cut to c comes 0.2 s after the cut to b (min_gap_s 1): held back. By the time the gap
    # has passed the picture is b again, so it is dropped; a pan later is still no cut.
    wide = texture(70, H, W * 3)
    a, b, c = features(texture(71)), features(wide[:, :W]), features(texture(72))
    pan = [features(wide[:, x : x + W]) for x in range(0, 2 * W, 3)]
    frames = [a] * 30 + [b] * 5 + [c] * 5 + [b] * 20 + pan
    assert picks(select(frames, min_gap_s=1.0)) == [(0, "start"), (30, "cut")]


def dissolve_then(after: list[FrameFeatures]) -> list[FrameFeatures]:
    """A 25-frame dissolve from one shot to another (its last blend at frame 53), then
    ``after``, a settle_frames-long (6) watch of which decides when the transition is taken."""
    a, b = texture(8), texture(9) * 0.6 + 60
    return (
        [features(a)] * 30
        + [features(a * (1 - k / 25) + b * (k / 25)) for k in range(1, 25)]
        + after
    )


def test_a_small_colour_change_does_not_restart_the_settling() -> None:
    b = np.clip(texture(9) * 0.6 + 60, 0, 255).astype(np.uint8)
    u = np.full_like(b, 128)
    u[10:20, 10:40] = 200  # 13 % of the picture turns another colour: its luma stays
    patch = features_from_planes(b, u, np.full_like(b, 128))
    plain = features(b)
    assert 0 < histogram_change(plain, patch) < KeyframeConfig().histogram_threshold / 3
    ((decided, _),) = decisions(dissolve_then([plain] * 2 + [patch] * 20))  # the patch at 56
    assert decided < 56 + 6  # not settle_frames after the patch: it did not count


def test_a_brightness_step_of_3_levels_restarts_the_settling() -> None:
    b = texture(9) * 0.6 + 60
    plain, brighter = features(b), features(b + 3)
    assert brighter.mean - plain.mean == 3.0
    assert decisions(dissolve_then([plain] * 2 + [brighter] * 20)) == [(56 + 6, 56)]  # step: 56
