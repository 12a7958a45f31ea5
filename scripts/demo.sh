#!/usr/bin/env bash
# First command of the README: install, then run the whole path on this machine (no GPU needed).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh
exec "${VIDCAP_VENV:-.venv}/bin/vidcap" demo "$@"
