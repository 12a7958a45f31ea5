"""Bad configuration fails at start-up with a message naming the key and the value."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from engine.config import EngineConfig
from stream.config import ConfigError, load_config, parse_config
from stream.ids import stream_id_from_source, validate_stream_id

MINIMAL = {"streams": [{"id": "cam1", "url": "rtsp://127.0.0.1:8554/cam"}]}


def test_minimal_config_gets_documented_defaults() -> None:
    config = parse_config(MINIMAL)
    assert config.engine.temperature == 0.1
    assert config.nats.url is None and config.nats.jetstream
    assert config.streams[0].is_live
    assert config.streams[0].rtsp_transport == "tcp"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"streams": []}, "nothing to caption"),
        ({"streams": [{"id": "a", "url": "concat:/a|/b"}]}, "protocol prefix"),
        ({"streams": [{"id": "a", "url": "subfile,,start,0,end,0,,:/a"}]}, "protocol prefix"),
        ({"streams": [{"id": "a", "url": "/a\x1b[31m.mp4"}]}, "control characters"),
        (
            {
                "streams": [{"id": "a", "url": "x"}, {"id": "b", "url": "y"}],
                "pipeline": {"max_streams": 1},
            },
            "2 streams configured; pipeline.max_streams is 1",
        ),
        ({"whip": {"enabled": True}}, "whip.token must be set"),
        ({"http": {"listen": "8080"}}, "expected host:port"),
        ({"whip": {"listen": "127.0.0.1:8080"}}, "whip.listen moved to the http section"),
        (
            {"http": {"listen": None}, "whip": {"enabled": True, "token": "x" * 16}},
            "needs http.listen",
        ),
        ({"http": {"token": "short"}}, "16+ characters (value hidden)"),
        ({"streams": [{"id": "a.b", "url": "x"}]}, "streams.0.id"),
        ({"streams": [{"id": "cam>", "url": "x"}]}, "'cam>'"),
        (
            {"streams": [{"id": "cam1", "url": "x", "colour": "red"}]},
            "streams.0.colour: Extra inputs",
        ),
        ({"engine": {"temperature": 5}}, "engine.temperature"),
        ({"engine": {"max_num_seqs": 0}}, "(got 0)"),
        ({"engine": {"max_tokens": "many"}}, "(got 'many')"),
        (
            {"engine": {"max_num_seqs": 512, "max_num_batched_tokens": 256}},
            "max_num_batched_tokens (256)",
        ),
        ({"keyframes": {"min_gap_s": 20, "max_interval_s": 5}}, "min_gap_s (20.0)"),
        ({"nats": {"subject_prefix": "a b"}}, "nats.subject_prefix"),
        ({"nats": {"jetstrem": True}}, "nats.jetstrem: Extra inputs"),
        ({"pipeline": {"max_pending_keyframes": -1}}, "pipeline.max_pending_keyframes"),
    ],
)
def test_bad_values_name_key_and_value(change: dict, expected: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_config({**MINIMAL, **change})
    assert expected in str(error.value)


@pytest.mark.parametrize("name", ["clip,1.mp4", "./subfile,,:x.mp4", "/data/a:b.mp4", "a"])
def test_file_names_with_commas_and_colons_stay_file_names(name: str) -> None:
    """Only what FFmpeg would read as a protocol is refused."""
    assert parse_config({"streams": [{"id": "a", "url": name}]}).streams[0].url == name


def test_duplicate_stream_ids_are_named() -> None:
    streams = [{"id": "cam1", "url": "a"}, {"id": "cam1", "url": "b"}]
    with pytest.raises(ConfigError, match="repeated: cam1"):
        parse_config({"streams": streams})


def test_secrets_come_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIDCAP_TEST_TOKEN", "s3cret")
    path = tmp_path / "c.yaml"
    path.write_text(
        "streams: [{id: cam1, url: 'rtsp://127.0.0.1/x'}]\nnats: {token: '${VIDCAP_TEST_TOKEN}'}\n"
    )
    config = load_config(path)
    assert config.nats.token is not None
    assert config.nats.token.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(config)


def test_missing_environment_variable_is_named(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("streams: [{id: cam1, url: x}]\nnats: {token: '${VIDCAP_SURELY_UNSET}'}\n")
    with pytest.raises(ConfigError, match="nats.token: environment variable VIDCAP_SURELY_UNSET"):
        load_config(path)


def test_unreadable_yaml_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("streams: [\n")
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(path)


def test_example_config_is_valid() -> None:
    config = load_config(Path(__file__).parents[1] / "configs" / "example.yaml")
    assert config.engine.temperature == 0.1


def test_worker_example_config_is_valid() -> None:
    from stream.config import WorkerConfig, load_yaml, parse_section

    path = Path(__file__).parents[1] / "configs" / "worker.yaml"
    config = parse_section(WorkerConfig, load_yaml(path), str(path))
    assert config.engine.kind == "vllm" and config.nats.url


def test_a_worker_cannot_forward_to_workers() -> None:
    from stream.config import WorkerConfig, parse_section

    with pytest.raises(ConfigError, match="must be vllm or openai"):
        parse_section(
            WorkerConfig,
            {"engine": {"kind": "nats"}, "nats": {"url": "nats://127.0.0.1:4222"}},
            "w",
        )


def test_cli_exits_2_with_the_message_on_bad_config(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("streams: [{id: 'bad id', url: x}]\n")
    done = subprocess.run(
        [sys.executable, "-m", "stream.cli", "run", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "streams.0.id" in done.stderr and "'bad id'" in done.stderr


@pytest.mark.parametrize(
    "hostile", ["", "a.b", "*", ">", "a b", "x" * 65, "ü", "a\nb", "../x", "cam\n", "\ncam"]
)
def test_hostile_stream_ids_are_rejected(hostile: str) -> None:
    with pytest.raises(ValueError, match="invalid stream id"):
        validate_stream_id(hostile)


def test_a_trailing_newline_in_a_config_file_stream_id_is_rejected(tmp_path: Path) -> None:
    """``re.match`` with ``$`` accepts "cam\\n"; the id would put a newline into subjects."""
    path = tmp_path / "c.yaml"
    path.write_text('streams: [{id: "cam\\n", url: x}]\nwhip: {streams: ["ok", "w\\n"]}\n')
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert "streams.0.id" in str(error.value) and "whip.streams.1" in str(error.value)
    with pytest.raises(ConfigError, match="streams.0.id"):
        parse_config({"streams": [{"id": "cam\n", "url": "x"}]})


def test_ids_derived_from_sources_are_valid_and_unique() -> None:
    taken: set[str] = set()
    for source in ["rtsp://u:p@10.0.0.1/live/cam.1", "/videos/cam.1.mp4", "/videos/cam.1.mp4", "?"]:
        stream_id = stream_id_from_source(source, taken)
        validate_stream_id(stream_id)
        assert stream_id not in taken
        taken.add(stream_id)


@pytest.mark.parametrize(
    ("stream_url", "expected"),
    [
        ("rtps://cam/live", "did you mean .*rtsp://"),
        ("htps://cdn/x.m3u8", "did you mean https://"),
        ("bogus://x", "unknown URL scheme bogus://"),
    ],
)
def test_typos_in_url_schemes_fail_at_start_up(stream_url: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        parse_config({"streams": [{"id": "cam", "url": stream_url}]})


def test_known_schemes_and_paths_pass() -> None:
    for url in ("rtsp://cam/live", "srt://h:9000", "https://cdn/x.m3u8", "/data/clip.mp4", "c.mp4"):
        parse_config({"streams": [{"id": "cam", "url": url}]})


def test_a_nats_url_is_a_nats_url(capsys: pytest.CaptureFixture[str]) -> None:
    # http:// was taken, then retried for ever as an unknown host (found by a trial).
    streams = [{"id": "cam", "url": "c.mp4"}]
    with pytest.raises(ConfigError, match=r"nats.url: Value error, http:// is not a NATS URL"):
        parse_config({"streams": streams, "nats": {"url": "nats://a:4222,http://b:4222"}})
    for url in ("nats://a:4222,tls://b:4222", "127.0.0.1:4222", "wss://h:443", None):
        parse_config({"streams": streams, "nats": {"url": url}})
    from stream.cli import main

    assert main(["run", "--nats", "http://127.0.0.1:4222", __file__]) == 2  # a file that is
    assert capsys.readouterr().err.startswith("vidcap: --nats: http:// is not a NATS URL")


def test_an_engine_url_needs_http_or_https() -> None:
    streams = [{"id": "cam", "url": "c.mp4"}]
    with pytest.raises(ConfigError, match="engine.url must be http"):
        parse_config({"streams": streams, "engine": {"kind": "openai", "url": "gpu-host:8000/v1"}})
    parse_config({"streams": streams, "engine": {"kind": "openai", "url": "http://gpu:8000/v1"}})


def test_an_unknown_quantization_fails_before_the_model_loads() -> None:
    from engine.errors import EngineSettingsError
    from engine.factory import check_quantization, start_vllm_engine

    check_quantization("fp8")
    with pytest.raises(EngineSettingsError, match="did you mean 'fp8'"):
        start_vllm_engine(EngineConfig(model="/nonexistent/model", quantization="fp-8"))


def test_a_model_that_is_not_there_or_not_a_model_is_one_line(tmp_path: Path) -> None:
    """Each ended in a traceback of 80-130 lines (found by a fresh-clone trial)."""
    from engine.errors import EngineSettingsError
    from engine.factory import start_vllm_engine

    with pytest.raises(EngineSettingsError, match="'/nonexistent/model' does not exist"):
        start_vllm_engine(EngineConfig(model="/nonexistent/model"))
    with pytest.raises(EngineSettingsError, match="vLLM could not start it: .*") as refused:
        start_vllm_engine(EngineConfig(model=str(tmp_path)))  # a folder, but no model in it
    assert "\n" not in str(refused.value) and str(tmp_path) in str(refused.value)


def test_a_duplicate_window_longer_than_retention_is_refused_by_name() -> None:
    # nats-server refuses such a stream (error 10052) only once vidcap has started.
    streams = [{"id": "cam", "url": "c.mp4"}]
    with pytest.raises(ConfigError, match="duplicate_window_s .* must be <= max_age_s"):
        parse_config({"streams": streams, "nats": {"max_age_s": 60, "duplicate_window_s": 120}})
    parse_config({"streams": streams, "nats": {"max_age_s": 0, "duplicate_window_s": 120}})


def test_the_default_worker_tries_fit_in_a_keyframes_deadline() -> None:
    """At 60 s a try, a killed worker's keyframes timed out (request_timeout_s, 60) before
    their second try could go (a trial)."""
    engine = EngineConfig(kind="nats")
    assert engine.worker_timeout_s * engine.worker_attempts <= engine.request_timeout_s


@pytest.mark.parametrize(
    "argv",
    [
        ["--log-format", "json", "--log-level", "info", "tail"],
        ["tail", "--log-format", "json", "--log-level", "info"],  # a trial's "unrecognized"
        ["snapshot", "get", "cam", "1", "-o", "x.jpg", "--log-format=json", "--log-level=info"],
        ["bench", "snapshots", "--log-level", "info", "--log-format", "json"],
    ],
)
def test_the_log_options_go_before_or_after_the_command(argv: list[str]) -> None:
    from stream.cli import _parser

    args = _parser().parse_args(argv)
    assert (args.log_format, args.log_level) == ("json", "info")
    assert (_parser().parse_args(["tail"]).log_level) == "warning"  # the default stays


def test_a_config_s_missing_file_is_said_before_the_engine_loads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A trial ran configs/example.yaml: the engine loaded for 65 s, then `replay` failed
    with FileNotFoundError. The stream still fails alone (the others go on), but at once the
    person running vidcap is told."""
    from stream.cli import _parser, build_run_config

    there = tmp_path / "there.mp4"
    there.write_bytes(b"")
    config_file = tmp_path / "vidcap.yaml"
    config_file.write_text(
        f"streams:\n  - {{id: gone, url: {tmp_path}/gone.mp4}}\n"
        f"  - {{id: there, url: {there}}}\n  - {{id: cam, url: 'rtsp://127.0.0.1:1/x'}}\n"
    )
    config = build_run_config(_parser().parse_args(["run", "--config", str(config_file)]))
    assert [s.id for s in config.streams] == ["gone", "there", "cam"]
    said = capsys.readouterr().out.splitlines()
    assert said == [
        f"vidcap: stream gone: {tmp_path}/gone.mp4: no such file (this stream will fail when "
        "the streams start)"
    ]
