"""Exact behaviour of stream ids derived from sources and of secret redaction: the cases the
mutation run (scripts/mutation.sh, docs/mutation.md) showed no other test pins down."""

from __future__ import annotations

import pytest

from stream.ids import stream_id_from_source, validate_stream_id
from stream.redact import Redactor, redact, url_secrets


def test_an_invalid_id_is_explained_in_full() -> None:
    with pytest.raises(ValueError) as error:
        validate_stream_id("a.b")
    assert str(error.value) == (
        "invalid stream id 'a.b': use 1-64 characters from A-Z a-z 0-9 _ - "
        "(dots, spaces, '*' and '>' would break NATS subjects)"
    )


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("rtsp://user:pw@10.0.0.5/cam1?token=x", "cam1"),
        ("http://h/live?a?b", "live"),  # the query starts at the first "?"
        ("rtsp://host/live/", "live"),  # a trailing slash is not the name
        ("rtsp://host/camX/", "camX"),  # only slashes are stripped
        ("/videos/match.final.mp4", "match-final"),  # only the last suffix goes
        ("/videos/ cam .mp4", "cam"),  # unsafe characters become "-", none at the ends
        ("/videos/Xray.mp4", "Xray"),
        ("/videos/.mp4", "stream"),  # nothing left: a generic name
        ("///", "stream"),
        ("/v/" + "a" * 60 + ".mp4", "a" * 56),  # room for a "-N" suffix within 64
        # No path: the host, never the user and password (found by a trial: the id was
        # "admin-Pw5ecret-127-0-0", in every event, subject and log line).
        ("rtsp://admin:Pw5ecret@127.0.0.1:1/", "127-0-0-1"),
        ("rtsp://viewer:Other5ecret@cam.example:554", "cam-example"),
        ("srt://u:p@h:1?passphrase=secret", "h"),
        ("rtsp://[::1]:554/", "1"),
        ("rtsp://[bad/", "stream"),  # a malformed URL: a generic name
    ],
)
def test_an_id_is_the_sources_name(source: str, expected: str) -> None:
    assert stream_id_from_source(source, set()) == expected


def test_taken_ids_get_the_next_free_number() -> None:
    assert stream_id_from_source("/v/cam.mp4", {"cam"}) == "cam-2"
    assert stream_id_from_source("/v/cam.mp4", {"cam", "cam-2"}) == "cam-3"
    assert stream_id_from_source("/v/cam.mp4", {"cam-2"}) == "cam"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("rtsp://@host/s", "rtsp://***@host/s"),  # an empty user-info is still hidden
        ("http://h/p?token=&a=1", "http://h/p?token=&a=1"),  # nothing to hide: left as is
    ],
)
def test_redact_edges(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize(
    ("url", "secrets"),
    [
        ("rtsp://user:pw@host/p?next=http://h", {"user:pw", "pw"}),
        ("rtsp://u:p@ss@host/", {"u:p@ss", "p@ss"}),  # the user-info ends at the last "@"
        ("rtsp://u:pa:ss@host/", {"u:pa:ss", "pa:ss"}),  # the password from the first ":"
        ("rtsp://u:p%40x@host/", {"u:p%40x", "p%40x", "u:p@x", "p@x"}),
        ("user:pw@host", set()),  # no scheme, no URL
    ],
)
def test_url_secrets(url: str, secrets: set[str]) -> None:
    assert url_secrets(url) == secrets


def test_the_whole_user_info_is_replaced_before_the_password_inside_it() -> None:
    # Lexically "zzz9" sorts after "admin:zzz9": only longest-first hides the user name too.
    redactor = Redactor(["rtsp://admin:zzz9@cam/s"])
    assert redactor("login admin:zzz9 refused") == "login *** refused"


def test_a_three_character_secret_is_hidden_in_free_text() -> None:
    assert Redactor(["rtsp://u:abc@cam/s"])("auth abc failed") == "auth *** failed"
