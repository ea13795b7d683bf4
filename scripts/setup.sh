#!/usr/bin/env bash
# Create .venv with torch 2.13.0 (CPU build where that is what pip finds) and transformer-mt
# installed in editable mode with its test dependencies. Safe to run again: it only adds what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
# torch first and pinned: an unpinned torch pulls several GB of CUDA packages.
.venv/bin/python -m pip install -q --disable-pip-version-check -c scripts/constraints.txt torch==2.13.0
.venv/bin/python -m pip install -q --disable-pip-version-check -c scripts/constraints.txt -e ".[serve,test]"
