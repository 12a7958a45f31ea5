"""vLLM's log lines go to a file (errors also to the terminal), in every process that inherits
the environment; a user's own vLLM logging configuration is left alone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from stream.vllm_logs import route_vllm_logs

# What vLLM does in each of its processes with VLLM_LOGGING_CONFIG_PATH (vllm/logger.py).
CHILD = """
import json, logging, logging.config, os
logging.config.dictConfig(json.load(open(os.environ["VLLM_LOGGING_CONFIG_PATH"])))
logging.getLogger("vllm.worker").warning("a warning for the file")
logging.getLogger("vllm.worker").error("an error for both")
"""


# vidcap's process: its console handler, the route, then a vLLM module that logs while it
# is imported, before vLLM has read the configuration file.
VIDCAP = """
import logging, sys
from pathlib import Path
from stream.vllm_logs import route_vllm_logs
logging.basicConfig(format="CONSOLE %(message)s")
route_vllm_logs(Path(sys.argv[1]))
logging.getLogger("vllm.triton_utils.importing").warning("logged while imported")
logging.getLogger("torch.utils.cpp_extension").warning("No CUDA runtime is found")
"""


def test_vllm_lines_go_to_the_file_and_errors_to_the_terminal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("VLLM_LOGGING_CONFIG_PATH", raising=False)
    log = tmp_path / "logs" / "vllm.log"
    vidcap = subprocess.run(
        [sys.executable, "-c", VIDCAP, str(log)], capture_output=True, text=True, check=True
    )
    assert vidcap.stderr == ""  # both were seen on the console before
    environment = {**os.environ, "VLLM_LOGGING_CONFIG_PATH": str(log.with_suffix(".logging.json"))}
    child = subprocess.run(
        [sys.executable, "-c", CHILD], env=environment, capture_output=True, text=True
    )
    assert child.returncode == 0, child.stderr
    written = log.read_text()
    assert "logged while imported" in written and "No CUDA runtime" in written
    assert "a warning for the file" in written and "an error for both" in written
    assert "an error for both" in child.stderr and "a warning" not in child.stderr


def test_a_users_own_vllm_logging_is_left_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VLLM_LOGGING_CONFIG_PATH", "/etc/my-logging.json")
    assert route_vllm_logs(tmp_path / "vllm.log") is None
    assert os.environ["VLLM_LOGGING_CONFIG_PATH"] == "/etc/my-logging.json"


# vidcap's process routes, then starts a Python process as vLLM starts its engine core; that
# process warns as vLLM's kernel dispatcher does when imported, and as some other module.
WARNS = """
import warnings
for module in ("vllm.triton_utils.dispatcher", "elsewhere"):
    warnings.warn_explicit("reduce_op is deprecated", FutureWarning, "x.py", 1, module=module)
"""
STARTS_A_CHILD = f"""
import subprocess, sys
from pathlib import Path
from stream.vllm_logs import route_vllm_logs
route_vllm_logs(Path(sys.argv[1]))
subprocess.run([sys.executable, "-c", {WARNS!r}], check=True)
"""


def test_a_known_vllm_warning_is_quiet_in_the_processes_vllm_starts(tmp_path: Path) -> None:
    """Each engine process printed torch's FutureWarning about reduce_op twice (a trial)."""
    environment = {k: v for k, v in os.environ.items() if k != "VLLM_LOGGING_CONFIG_PATH"}
    environment["PYTHONWARNINGS"] = "default::DeprecationWarning"  # the user's, kept
    run = subprocess.run(
        [sys.executable, "-c", STARTS_A_CHILD, str(tmp_path / "vllm.log")],
        env=environment,
        capture_output=True,
        text=True,
        check=True,
    )
    assert run.stderr.count("FutureWarning") == 1, run.stderr  # the other module's only


# vidcap's process with `--log-level info --log-format json`, then an engine process.
ROUTES_INFO_AS_JSON = f"""
import logging, subprocess, sys
from stream.vllm_logs import route_vllm_logs
assert route_vllm_logs(None, "json", "INFO") is None  # no file: the terminal has it all
logging.getLogger("vllm.config").info("resolved")
subprocess.run([sys.executable, "-c", {CHILD!r}.replace("warning", "info")], check=True)
"""


def test_with_log_level_info_vllm_lines_are_on_stderr_in_vidcap_s_format(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A trial ran `vidcap run --log-format json --log-level info`: vLLM's lines came as its
    own text on stdout, among the event lines a collector parses."""
    monkeypatch.delenv("VLLM_LOGGING_CONFIG_PATH", raising=False)
    monkeypatch.setenv("VIDCAP_CACHE", str(tmp_path))
    vidcap = subprocess.run(
        [sys.executable, "-c", ROUTES_INFO_AS_JSON], capture_output=True, text=True, check=True
    )
    assert vidcap.stdout == ""
    lines = [json.loads(line) for line in vidcap.stderr.splitlines()]
    assert [(line["logger"], line["level"], line["message"]) for line in lines] == [
        ("vllm.config", "INFO", "resolved"),
        ("vllm.worker", "INFO", "a info for the file"),
        ("vllm.worker", "ERROR", "an error for both"),
    ]
