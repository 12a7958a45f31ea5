"""The scene benchmark's scoring rules (the numbers the closing notes quote)."""

from stream.bench.labelled_set import Event
from stream.bench.scenes import score

EVENTS = [
    Event("hard", "cut", 100, 100),
    Event("gradual", "dissolve", 200, 215),
    Event("distractor", "flash", 300, 302),
]


def test_exact_hits_score_perfectly() -> None:
    result = score([101, 220], EVENTS)
    assert (result["all"].precision, result["all"].recall) == (1.0, 1.0)


def test_hard_cut_tolerance_is_two_frames() -> None:
    assert score([102, 210], EVENTS)["hard"].true_positives == 1
    missed = score([103, 210], EVENTS)
    assert missed["hard"].true_positives == 0 and missed["hard"].false_negatives == 1
    assert missed["hard"].false_positives == 1


def test_detections_in_distractors_and_doubles_are_false_positives() -> None:
    result = score([100, 205, 212, 301], EVENTS)
    assert result["distractor"].false_positives == 1
    assert result["gradual"].true_positives == 1 and result["gradual"].false_positives == 1
    assert result["all"].precision == 0.5 and result["all"].recall == 1.0


def test_a_gradual_detection_may_come_just_after_it_settles() -> None:
    assert score([227], EVENTS)["gradual"].true_positives == 1
    assert score([228], EVENTS)["gradual"].true_positives == 0
