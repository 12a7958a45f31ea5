#!/usr/bin/env bash
# Second command of the README: install everything the tests need, then run them.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-system.sh
scripts/install.sh
exec "${VIDCAP_VENV:-.venv}/bin/python" -m pytest "$@"
