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
.venv/bin/python -m pip install -q --disable-pip-version-check -c scripts/constraints.txt -e ".[serve,export,import,plots,test,docs]"
# CI also runs the web page test in a real headless browser: Debian's chromium, installed once.
if [ -n "${CI:-}" ] && ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null \
        || echo "setup: could not install chromium; the browser test will fail" >&2
fi
