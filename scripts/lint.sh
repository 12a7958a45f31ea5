#!/usr/bin/env bash
# The gate: lint, format and types over the code and its tests. Any finding fails.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${VIDCAP_VENV:-.venv}/bin
"$bin/ruff" check stream engine tests examples
"$bin/ruff" format --check stream engine tests examples
"$bin/mypy"
echo "vidcap lint: clean"
