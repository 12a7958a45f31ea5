"""The latest of each stream, kept so a browser that connects sees every card at once: its last
caption, its source's condition, its pause state and its logos' last alerts.

Bounded: at most ``MAX_STREAMS`` streams (the least recently heard of is forgotten) and
``MAX_BRANDS`` brands per stream. Entries are the feed's encoded chunks, replayed as they were
pushed."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

_T = TypeVar("_T")

MAX_STREAMS: Final = 256
MAX_BRANDS: Final = 32
MAX_NODES: Final = 256

PAUSE_STATES: Final = frozenset({"paused", "unpaused"})
CONDITION_STATES: Final = frozenset(
    {"connecting", "live", "stalled", "reconnecting", "recovered", "ended", "failed", "stopped"}
)
"""Status states that say what a stream is doing now. The others (keyframes_dropped,
events_dropped, ...) report one occurrence and leave the card's state as it was."""


@dataclass(slots=True)
class _Card:
    condition: bytes | None = None
    pause: bytes | None = None
    caption: bytes | None = None
    logos: OrderedDict[str, bytes] = field(default_factory=OrderedDict)

    def chunks(self) -> list[bytes]:
        kept = [self.condition, self.pause, *self.logos.values(), self.caption]
        return [chunk for chunk in kept if chunk is not None]


class Board:
    def __init__(self) -> None:
        self._cards: OrderedDict[str, _Card] = OrderedDict()
        self._nodes: OrderedDict[str, bytes] = OrderedDict()

    def note_node(self, key: str, chunk: bytes | None) -> None:
        """A live vidcap's latest presence chunk; None forgets it (it went away)."""
        if chunk is None:
            self._nodes.pop(key, None)
        else:
            _remember(self._nodes, key, chunk, MAX_NODES)

    def note(self, stream: str, kind: str, event: dict[str, Any], chunk: bytes) -> None:
        card = self._card(stream)
        if kind == "caption":
            card.caption = chunk
        elif kind == "status" and event.get("state") in CONDITION_STATES:
            card.condition = chunk
        elif kind == "status" and event.get("state") in PAUSE_STATES:
            card.pause = chunk
        elif kind == "logo":
            _remember(card.logos, str(event.get("brand", "")), chunk, MAX_BRANDS)

    def replay(self) -> list[bytes]:
        """The live vidcaps, then every stream's kept chunks, least recently heard of first."""
        cards = [chunk for card in self._cards.values() for chunk in card.chunks()]
        return [*self._nodes.values(), *cards]

    def _card(self, stream: str) -> _Card:
        card = self._cards.get(stream) or _Card()
        _remember(self._cards, stream, card, MAX_STREAMS)
        return card


def _remember(entries: OrderedDict[str, _T], key: str, value: _T, most: int) -> None:
    entries[key] = value
    entries.move_to_end(key)
    while len(entries) > most:
        entries.popitem(last=False)
