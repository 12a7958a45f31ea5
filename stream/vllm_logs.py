"""vLLM's own log lines go to a file, so that a terminal shows vidcap's lines.

vLLM configures its ``vllm`` logger from ``VLLM_LOGGING_CONFIG_PATH`` in every process it
starts (the environment is inherited), so one logging configuration written here routes the
engine core and worker processes too. Errors still reach the terminal."""

from __future__ import annotations

import json
import logging.config
import os
import re
import warnings
from pathlib import Path

from engine.cache import cache_dir
from stream.log_format import TEXT_FORMAT


def route_vllm_logs(
    log_file: Path | None, log_format: str = "text", level: str = "INFO"
) -> Path | None:
    """Send vLLM's log to ``log_file`` (errors to stderr too), or with no file (vidcap's
    ``--log-level info``) all of it to stderr; on stderr in vidcap's ``log_format`` (vLLM's own
    handler wrote text to stdout, among the events). Returns the file, or None when there is
    none or the user configured vLLM's logging themselves."""
    if "VLLM_LOGGING_CONFIG_PATH" in os.environ or os.environ.get("VLLM_CONFIGURE_LOGGING") == "0":
        return None
    folder = log_file.parent if log_file is not None else cache_dir() / "logs"
    folder.mkdir(parents=True, exist_ok=True)
    handlers: dict[str, dict[str, str]] = {
        "terminal": {
            "class": "logging.StreamHandler",
            "stream": "ext://sys.stderr",
            "formatter": log_format,
            "level": "ERROR" if log_file is not None else level,
        }
    }
    if log_file is not None:
        handlers["file"] = {
            "class": "logging.FileHandler",
            "filename": str(log_file),
            "formatter": "plain",
            "level": "INFO",
        }
    config = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "plain": {"format": "%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"},
            "text": {"format": TEXT_FORMAT},
            "json": {"()": "stream.log_format.JsonLogFormatter"},
        },
        "handlers": handlers,
        "loggers": {
            name: {
                "handlers": list(handlers),
                "level": "INFO" if log_file is not None else level,
                "propagate": False,
            }
            # torch's C++ extension helper, imported by vLLM, warns on every host without
            # CUDA ("No CUDA runtime is found").
            for name in ("vllm", "torch.utils.cpp_extension")
        },
    }
    config_file = folder / "vllm.logging.json"
    config_file.write_text(json.dumps(config))
    os.environ["VLLM_LOGGING_CONFIG_PATH"] = str(config_file)
    # And here at once: some of vLLM's modules log while imported, before vLLM has read
    # the file ("Triton is installed, but doesn't include CPU backend" reached the terminal).
    logging.config.dictConfig(config)
    _quiet_known_warnings()
    return log_file


# vLLM's kernel dispatcher looks at every attribute of torch.distributed, deprecated ones too,
# and each engine process printed torch's FutureWarning twice on the terminal.
_KNOWN_WARNINGS: tuple[tuple[type[Warning], str], ...] = (
    (FutureWarning, "vllm.triton_utils.dispatcher"),
)


def _quiet_known_warnings() -> None:
    """Here, and in the processes vLLM starts (they read ``PYTHONWARNINGS`` as they start,
    before any import)."""
    specs = [os.environ.get("PYTHONWARNINGS", "")]
    for category, module in _KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", category=category, module=re.escape(module) + r"\Z")
        specs.append(f"ignore::{category.__name__}:{module}")
    os.environ["PYTHONWARNINGS"] = ",".join(filter(None, specs))
