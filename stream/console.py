"""Lines for the person at the terminal (events, announcements), each printed in one write:
``print()`` writes the text and the newline apart, and a log line another thread wrote in
between landed inside the event line (``... cuts.mp42026-12-01 20:54:22,450 WARNING ...``)."""

from __future__ import annotations

import sys


def print_line(text: str) -> None:
    sys.stdout.write(f"{text}\n")
    sys.stdout.flush()
