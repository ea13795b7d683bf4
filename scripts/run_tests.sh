#!/usr/bin/env bash
# Set up (if needed) and run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Lint first (seconds): a moved import or an unused name fails here, before the long test run.
.venv/bin/ruff check .
# The manual next (seconds, offline): --strict fails on a broken link or anchor, a missing page, a page left out
# of the navigation, or a docstring mkdocstrings cannot read. Built into a temporary folder, never into the tree.
site_dir=$(mktemp -d)
trap 'rm -rf "$site_dir"' EXIT
NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict --site-dir "$site_dir"  # not --quiet: it hides the warnings that --strict counts
# One pytest worker per CPU core (the tests are single-threaded: conftest sets torch to 1 thread);
# --dist loadfile keeps each test file on one worker, so a module's fixtures are built once.
.venv/bin/python -m pytest -q -n auto --dist loadfile "$@"
