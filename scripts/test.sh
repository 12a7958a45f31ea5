#!/usr/bin/env bash
# Second command of the README: install everything the tests need, check the gate (ruff,
# mypy), then run the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-system.sh
scripts/install.sh
scripts/lint.sh
exec "${VIDCAP_VENV:-.venv}/bin/python" -m pytest "$@"
