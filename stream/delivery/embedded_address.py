"""Where the embedded nats-server of a vidcap running on this machine listens (a random port),
for `vidcap tail` and `vidcap snapshot get` without ``--nats``: a small file in vidcap's cache
folder, written when the server is up and removed when it stops. A killed vidcap's file is
ignored (its process is gone); with several vidcaps, the last one started is found."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Final

import orjson

from engine.cache import cache_dir

DEFAULT_URL: Final = "nats://127.0.0.1:4222"
TOOL_HELP: Final = (
    f"NATS URL (default: the embedded server of the vidcap running here, else {DEFAULT_URL})"
)


def _file() -> Path:
    return cache_dir() / "embedded-nats.json"


def tool_nats_url(given: str | None, tool: str) -> str:
    """The NATS URL for a tool run here (`vidcap tail`, `snapshot get`, `index`): ``given``,
    else the embedded server of the vidcap running here (said on stderr), else the default."""
    if given:
        return given
    found = running_vidcap()
    if found is None:
        return DEFAULT_URL
    url, pid = found
    print(f"{tool}: the embedded nats-server of vidcap (pid {pid}) at {url}", file=sys.stderr)
    return url


def remember(url: str) -> None:
    path = _file()
    with contextlib.suppress(OSError):  # a read-only home: the tools then need --nats
        path.parent.mkdir(parents=True, exist_ok=True)
        written = path.with_suffix(f".{os.getpid()}.tmp")
        written.write_bytes(orjson.dumps({"url": url, "pid": os.getpid()}))
        written.replace(path)


def forget() -> None:
    """Only this process's: a vidcap started since has written its own."""
    if (found := _read()) is not None and found[1] == os.getpid():
        with contextlib.suppress(OSError):
            _file().unlink()


def running_vidcap() -> tuple[str, int] | None:
    """The URL and process of the embedded server of a vidcap that is running."""
    found = _read()
    return found if found is not None and is_running(found[1]) else None


def is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's vidcap: running
        pass
    return True


def _read() -> tuple[str, int] | None:
    try:
        data = orjson.loads(_file().read_bytes())
        url, pid = data["url"], data["pid"]
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError):
        return None
    if not (isinstance(url, str) and url.startswith("nats://") and isinstance(pid, int)):
        return None
    return url, pid
