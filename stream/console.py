"""Lines for the person at the terminal (events, announcements), each printed in one write:
``print()`` writes the text and the newline apart, and a log line another thread wrote in
between landed inside the event line (``... cuts.mp42026-12-01 20:54:22,450 WARNING ...``)."""

from __future__ import annotations

import sys
from collections.abc import Callable


def print_line(text: str) -> None:
    sys.stdout.write(f"{text}\n")
    sys.stdout.flush()


def say_to(command: str) -> Callable[[str], None]:
    """A command's own lines on stderr (``vidcap tail: ...``): NATS trouble said once, not
    logged at each try."""
    return lambda line: print(f"{command}: {line}", file=sys.stderr, flush=True)
