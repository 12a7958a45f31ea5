"""Bearer tokens, checked in constant time (WHIP publishers, the stream API)."""

from __future__ import annotations

import hashlib
import hmac


class BearerToken:
    def __init__(self, token: str) -> None:
        self._expected = _digest(f"Bearer {token}")

    def matches(self, authorization: str) -> bool:
        """Compared as SHA-256 digests: constant time in the content and the length."""
        return hmac.compare_digest(_digest(authorization), self._expected)


def _digest(text: str) -> bytes:
    # aiohttp decodes header bytes as UTF-8 with surrogate escapes; they must still hash.
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).digest()
