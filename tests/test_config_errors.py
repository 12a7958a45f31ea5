"""What a bad configuration's error says: where it came from (the file, or the caller's name
for the data), the key that is wrong (an unset ${ENV} reference too, inside lists), and never
the contents of a rejected section (a token in it is still a secret); a mistyped URL scheme
gets at most two suggestions; http.listen's default and the environment variable that
changes it."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream.config import HTTP_LISTEN_ENV, ConfigError, load_config, parse_config

STREAMS = {"streams": [{"id": "cam1", "url": "rtsp://127.0.0.1:8554/cam"}]}


def test_a_bad_value_in_a_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "vidcap.yaml"
    path.write_text("streams:\n  - id: cam1\n    url: rtsp://127.0.0.1/cam\n    loop: maybe\n")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert str(error.value).startswith(f"{path}:")
    assert "streams.0.loop" in str(error.value)


def test_a_file_that_is_no_mapping_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "vidcap.yaml"
    path.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert str(path) in str(error.value)


def test_a_yaml_syntax_error_says_where_in_the_file(tmp_path: Path) -> None:
    """It said 'in "<unicode string>", line 3' (a trial); bytes that are no UTF-8 were a
    traceback."""
    path = tmp_path / "vidcap.yaml"
    path.write_text("streams:\n  - id: [\n")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert f'in "{path}", line 3' in str(error.value)
    path.write_bytes(b"\xff\xfe streams")
    with pytest.raises(ConfigError, match=f"cannot read config {path}: 'utf-8' codec"):
        load_config(path)


def test_data_from_elsewhere_is_named_by_its_source() -> None:
    bad = {**STREAMS, "pipeline": {"max_streams": 0}}
    with pytest.raises(ConfigError) as error:
        parse_config(bad, "POST /streams")
    assert str(error.value).startswith("POST /streams:")


@pytest.mark.parametrize(
    ("yaml", "key"),
    [
        ("nats:\n  url: ${VIDCAP_SURELY_UNSET_1}\n", "nats.url"),
        ("streams:\n  - id: cam1\n    url: ${VIDCAP_SURELY_UNSET_1}\n", "streams.0.url"),
        ("streams:\n  - id: a\n    url: /a.mp4\n  - ${VIDCAP_SURELY_UNSET_1}\n", "streams.1"),
    ],
)
def test_an_unset_environment_variable_names_its_key(yaml: str, key: str, tmp_path: Path) -> None:
    path = tmp_path / "vidcap.yaml"
    path.write_text(yaml)
    with pytest.raises(ConfigError) as error:
        load_config(path)
    named, _, rest = str(error.value).partition(": ")
    assert named == key and "VIDCAP_SURELY_UNSET_1" in rest


def test_a_rejected_section_is_not_echoed_with_its_secrets() -> None:
    # The whole whip section fails its own check; its short token must not be shown.
    bad = {**STREAMS, "whip": {"enabled": True, "token": "short-s3cret"}}
    with pytest.raises(ConfigError) as error:
        parse_config(bad)
    assert "whip" in str(error.value)
    assert "short-s3cret" not in str(error.value)


def test_http_listen_defaults_to_8480_and_the_environment_changes_the_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(HTTP_LISTEN_ENV, raising=False)
    assert parse_config(STREAMS).http.listen == "127.0.0.1:8480"
    monkeypatch.setenv(HTTP_LISTEN_ENV, "0.0.0.0:9000")
    assert parse_config(STREAMS).http.listen == "0.0.0.0:9000"
    monkeypatch.setenv(HTTP_LISTEN_ENV, "")  # empty: no HTTP server
    assert parse_config(STREAMS).http.listen is None


@pytest.mark.parametrize(("typo", "first"), [("rtps", "rtsp"), ("htp", "http"), ("tsp", "rtsp")])
def test_an_unknown_scheme_suggests_at_most_two_known_ones(typo: str, first: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_config({"streams": [{"id": "cam1", "url": f"{typo}://cam/live"}]})
    hint = str(error.value).split("did you mean ", 1)[1].split("?", 1)[0]
    suggestions = hint.split(" or ")
    assert suggestions[0] == f"{first}://" and len(suggestions) == 2
