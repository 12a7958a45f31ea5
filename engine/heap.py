"""The objects a process builds at start-up, out of the garbage collector's full passes.

Importing torch and vLLM and starting an engine leaves a few hundred thousand objects that
live as long as the process. CPython's full (oldest-generation) collection walks every one of
them on the thread that allocates, here the event loop: a pause of tenths of a second to a
second, long enough to make a lease renewal or a stall watchdog late. Freezing them once the
engine is up (what vLLM's own API server does) keeps each full pass to the objects made since.
"""

from __future__ import annotations

import gc
import time


def freeze_long_lived() -> None:
    """Collect what start-up left as garbage, then move every survivor to the permanent
    generation, which the collector never walks."""
    gc.collect()
    gc.freeze()


def full_collection_s() -> float:
    """How long one full collection takes now: the longest pause the collector makes."""
    started = time.perf_counter()
    gc.collect()
    return time.perf_counter() - started
