"""Logo alerts: ``appeared`` / ``disappeared`` per brand, debounced over a stream's captions.

A brand opens when it is seen in ``appear_k`` of the last ``appear_n`` captioned keyframes
and closes when it has not been seen for ``gone_keyframes`` keyframes or ``gone_s`` seconds
of stream time. Failed captions carry no information and are skipped.

Two modes. ``watchlist``: brands with aliases, matched case-insensitively as whole words
inside the model's free-text logo descriptions ("white Nike swoosh on the jersey" matches
Nike, and also alias "swoosh"). ``open``: every logo, by a normalised name (colours,
positions and generic words removed: "white BBC logo, lower left" -> "bbc").
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass

from stream.config import LogoAlertConfig
from stream.delivery.events import CaptionEvent, LogoEvent, LogoSighting

# Words that describe how a logo looks or where it is, not whose it is (open mode).
_GENERIC = frozenset(
    """
    a an the logo logos icon emblem badge symbol mark wordmark text lettering sign small large
    big tiny white black red green blue yellow orange purple pink grey gray silver gold golden
    dark light bright transparent top bottom left right upper lower corner centre center
    middle visible partially partial faint watermark overlay screen
    """.split()
)
_CUT_AT = re.compile(r",|\b(?:on|in|at|near|over|across|of the)\b")
_WORD = re.compile(r"[a-z0-9][a-z0-9&'+.-]*")


def open_name(description: str) -> str | None:
    """A logo description reduced to a brand-like name; None when nothing specific is left."""
    head = _CUT_AT.split(description.lower(), maxsplit=1)[0]
    words = [w.strip(".'") for w in _WORD.findall(head) if w.strip(".'") not in _GENERIC]
    return " ".join(words[:3]) or None


@dataclass
class _Brand:
    recent: deque[LogoSighting | None]
    open: bool = False
    last_seen: LogoSighting | None = None
    matched: str = ""
    """The logo description the brand was last seen in."""
    misses: int = 0


class LogoTracker:
    """One stream's brands; feed it that stream's captions in order, with their seqs."""

    def __init__(self, config: LogoAlertConfig) -> None:
        self._config = config
        self._brands: dict[str, _Brand] = {}
        self._patterns = [
            (entry.brand, re.compile(_whole_words(entry.brand, *entry.aliases), re.IGNORECASE))
            for entry in config.watchlist
        ]

    @property
    def any_open(self) -> bool:
        """Some brand appeared and has not gone yet."""
        return any(state.open for state in self._brands.values())

    def observe(self, seq: int, caption: CaptionEvent) -> list[LogoEvent]:
        """The alerts this caption (published at ``seq``) opens or closes, in order."""
        if caption.outcome.caption is None:
            return []
        time = caption.time
        here = LogoSighting(seq, time.time_s, time.captured_at, caption.snapshot.stored)
        seen = self._brands_in(caption.outcome.caption["logos"])
        alerts = []
        for brand in sorted(set(seen) | set(self._brands)):
            state = self._brands.setdefault(brand, _Brand(deque(maxlen=self._config.appear_n)))
            if brand in seen:
                state.matched = seen[brand]
            alert = self._step(brand, state, here, seen=brand in seen)
            if alert is not None:
                alerts.append(alert)
        return alerts

    def _brands_in(self, logos: list[str]) -> dict[str, str]:
        """Brand -> the logo description it was matched in."""
        found: dict[str, str] = {}
        for description in logos:
            if self._config.mode == "watchlist":
                for brand, pattern in self._patterns:
                    if pattern.search(description):
                        found.setdefault(brand, description)
            elif (name := open_name(description)) is not None:
                found.setdefault(name, description)
        return found

    def _step(self, brand: str, state: _Brand, here: LogoSighting, seen: bool) -> LogoEvent | None:
        state.recent.append(here if seen else None)
        if seen:
            state.last_seen, state.misses = here, 0
        else:
            state.misses += 1
        if not state.open:
            hits = tuple(s for s in state.recent if s is not None)
            if seen and len(hits) >= self._config.appear_k:
                state.open = True
                return LogoEvent("appeared", brand, state.matched, hits)
            if not hits and state.misses >= self._config.appear_n:
                del self._brands[brand]  # forgotten: keeps memory bounded in open mode
            return None
        assert state.last_seen is not None
        gone_for_s = here.time_s - state.last_seen.time_s
        if not seen and (
            state.misses >= self._config.gone_keyframes or gone_for_s >= self._config.gone_s
        ):
            del self._brands[brand]
            return LogoEvent("disappeared", brand, state.matched, (state.last_seen, here))
        return None


def _whole_words(*names: str) -> str:
    return "|".join(rf"(?<!\w){re.escape(name.strip())}(?!\w)" for name in names if name.strip())
