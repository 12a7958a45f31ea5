"""Each line for the terminal (an event, an announcement) goes out in one write: a log line
from another thread cannot land inside it."""

from __future__ import annotations

import io

import pytest

from stream.cli import announce
from stream.console import print_line


class Writes(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def write(self, text: str) -> int:
        self.calls.append(text)
        return super().write(text)


def test_a_line_and_its_newline_are_one_write(monkeypatch: pytest.MonkeyPatch) -> None:
    out = Writes()
    monkeypatch.setattr("sys.stdout", out)
    print_line("cam #0 status  connecting: /clips/a.mp4")
    announce("started embedded nats-server at nats://127.0.0.1:4222")
    assert out.calls == [  # print() made these four writes
        "cam #0 status  connecting: /clips/a.mp4\n",
        "vidcap: started embedded nats-server at nats://127.0.0.1:4222\n",
    ]
