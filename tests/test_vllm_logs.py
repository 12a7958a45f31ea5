"""vLLM's log lines go to a file (errors also to the terminal), in every process that inherits
the environment; a user's own vLLM logging configuration is left alone."""

from __future__ import annotations

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


def test_vllm_lines_go_to_the_file_and_errors_to_the_terminal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("VLLM_LOGGING_CONFIG_PATH", raising=False)
    log = route_vllm_logs(tmp_path / "logs" / "vllm.log")
    assert log is not None
    child = subprocess.run(
        [sys.executable, "-c", CHILD], env=dict(os.environ), capture_output=True, text=True
    )
    assert child.returncode == 0, child.stderr
    written = log.read_text()
    assert "a warning for the file" in written and "an error for both" in written
    assert "an error for both" in child.stderr and "a warning" not in child.stderr


def test_a_users_own_vllm_logging_is_left_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VLLM_LOGGING_CONFIG_PATH", "/etc/my-logging.json")
    assert route_vllm_logs(tmp_path / "vllm.log") is None
    assert os.environ["VLLM_LOGGING_CONFIG_PATH"] == "/etc/my-logging.json"
