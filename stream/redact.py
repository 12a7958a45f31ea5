"""Secrets never leave vidcap: redaction for any text that may carry a URL.

Camera URLs carry credentials (``rtsp://user:pass@host``, ``?token=...``) and FFmpeg quotes
the whole URL in its error messages, so every string that leaves a source (exceptions, log
lines, status events) goes through here, and so do NATS URLs before they are printed.

Two passes. ``Redactor(url)`` first replaces the literal secrets it found in the URLs it was
given (the password and whole user-info, raw and percent-decoded, and the values of credential
query parameters), wherever they appear: that holds even when the URL is cut or quoted in a
way no pattern foresees. Then ``redact`` hides, in any text, whatever sits between
``scheme://`` and the last ``@`` of a URL (passwords may contain ``@``, ``/`` or ``:``) and the
value of every query parameter whose name says it is a credential.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final
from urllib.parse import unquote

MASK: Final = "***"
MIN_LITERAL_CHARS: Final = 3
"""Shorter secrets are hidden only where they sit in a URL: replacing every "a" in a text
would garble it. A password that short is no protection anyway."""

# A URL's extent in free text: up to whitespace or a character that cannot be in a URL
# unescaped. Single quotes are allowed inside (Python's repr quotes with them), so a quoted
# URL's user-info still ends at its last "@".
_URL: Final = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)([^\s\"<>`{}|\\^]*)")
_CREDENTIAL_NAME: Final = (
    r"[\w.\-]*(?:token|pass|pwd|secret|key|auth|sig|credential|session|jwt|nkey|seed)[\w.\-]*"
)
_QUERY_SECRET: Final = re.compile(rf"(?i)((?:^|[?&;\s]){_CREDENTIAL_NAME}=)([^&#\s\"'<>]*)")


def redact(text: str) -> str:
    """``text`` with URL user-info and credential query values replaced by ``***``."""
    return _QUERY_SECRET.sub(_mask_value, _URL.sub(_mask_userinfo, text))


def _mask_userinfo(match: re.Match[str]) -> str:
    scheme, rest = match.group(1), match.group(2)
    at = rest.rfind("@")
    return f"{scheme}{rest}" if at < 0 else f"{scheme}{MASK}{rest[at:]}"


def _mask_value(match: re.Match[str]) -> str:
    return match.group(1) + (MASK if match.group(2) else "")


def url_secrets(url: str) -> set[str]:
    """The secret parts of one URL: its user-info and password, credential query values."""
    found: set[str] = set()
    _, sep, rest = url.partition("://")
    if sep and "@" in rest:
        userinfo = rest[: rest.rfind("@")]
        found.add(userinfo)
        found.add(userinfo.partition(":")[2])
    found.update(match.group(2) for match in _QUERY_SECRET.finditer(url))
    found |= {unquote(secret) for secret in found}
    return {secret for secret in found if secret}


class Redactor:
    """Redaction that also knows the literal secrets of some URLs (a source's own)."""

    def __init__(self, urls: Iterable[str] = ()) -> None:
        secrets = set().union(*(url_secrets(url) for url in urls))
        # Longest first, so a whole user-info goes before the password inside it.
        self._literals = sorted(
            (s for s in secrets if len(s) >= MIN_LITERAL_CHARS), key=len, reverse=True
        )

    def __call__(self, text: str) -> str:
        for secret in self._literals:
            text = text.replace(secret, MASK)
        return redact(text)
