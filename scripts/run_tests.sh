#!/usr/bin/env bash
# Set up (if needed) and run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Lint first (seconds): a moved import or an unused name fails here, before the long test run.
.venv/bin/ruff check .
# One pytest worker per CPU core (the tests are single-threaded: conftest sets torch to 1 thread);
# --dist loadfile keeps each test file on one worker, so a module's fixtures are built once.
.venv/bin/python -m pytest -q -n auto --dist loadfile "$@"
