"""vidcap's cache folder: built models, logs, the default search index, the address of a
running embedded nats-server. ``VIDCAP_CACHE`` moves it (the tests give it a folder of
their own)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    return Path(os.environ.get("VIDCAP_CACHE", Path.home() / ".cache" / "vidcap"))
