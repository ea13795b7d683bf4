#!/usr/bin/env bash
# Set up (if needed) and run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Lint first (seconds): a moved import or an unused name fails here, before the long test run.
.venv/bin/ruff check .
.venv/bin/python -m pytest -q "$@"
