"""How search results and reports are printed: plain lines, a table, CSV or JSON.

Everything printed comes from model text or event fields, so it is untrusted: plain text has
control and bidi characters removed (``clean_text``), JSON lines have the ones a terminal
acts on escaped (``raw_line``), and CSV cells that a spreadsheet would run as a formula are
quoted as text."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import Any, Final

import orjson

from engine.guard import clean_text
from stream.tail import raw_line

_SUMMARY_CHARS: Final = 120
_FORMULA_START: Final = ("=", "+", "-", "@", "\t", "\r")


def search_line(hit: dict[str, Any]) -> str:
    """One result: time, stream #seq, keyframe, its summary, its logos, where JetStream has it."""
    text = clean_text(hit["summary"] or hit["description"] or "")
    if len(text) > _SUMMARY_CHARS:
        text = text[: _SUMMARY_CHARS - 1] + "…"
    line = f"{hit['time']}  {hit['stream']} #{hit['seq']} kf {hit['keyframe']}  {text}"
    if hit["logos"]:
        line += f"  [logos: {'; '.join(hit['logos'])}]"
    return clean_text(f"{line}  [js {hit['js_seq']}]")


def json_line(value: Any) -> str:
    return raw_line(orjson.dumps(value))


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """Rows as aligned plain-text columns (numbers right-aligned)."""
    cells = [[_cell(row[c]) for c in columns] for row in rows]
    widths = [max([len(c), *(len(line[i]) for line in cells)]) for i, c in enumerate(columns)]
    numeric = [all(isinstance(row[c], int | float) for row in rows) for c in columns]

    def render(values: Sequence[str]) -> str:
        parts = (
            v.rjust(w) if right else v.ljust(w)
            for v, w, right in zip(values, widths, numeric, strict=True)
        )
        return "  ".join(parts).rstrip()

    return "\n".join([render(columns), *(render(line) for line in cells)])


def csv_text(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_csv_cell(row[c]) for c in columns])
    return out.getvalue().rstrip("\n")


def duration(seconds: float) -> str:
    """1:02:03 for 3723 s."""
    whole = round(seconds)
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


def _cell(value: Any) -> str:
    return clean_text(value if isinstance(value, str) else f"{value}" if value is not None else "")


def _csv_cell(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    text = clean_text(value)
    return f"'{text}" if text.startswith(_FORMULA_START) else text
