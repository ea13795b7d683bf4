#!/usr/bin/env bash
# Quick start: set up, train the demo model (a few minutes on 2 CPU cores), translate, score.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source .venv/bin/activate
transformer-mt train --config configs/demo.yaml --output-dir runs/demo
echo "--- translations (beam 5):"
transformer-mt translate --model runs/demo \
    "The old farmer sees two small birds." \
    "A happy child did not follow the dog yesterday." \
    "Three kings do not like the green river."
echo "--- test set:"
transformer-mt evaluate --model runs/demo --split test
echo "--- serve it: transformer-mt serve --model runs/demo   (then open http://127.0.0.1:5000/ or:"
echo "    curl -s localhost:5000/translate -H 'Content-Type: application/json' -d '{\"q\": \"A dog sees the cat.\", \"source\": \"auto\", \"target\": \"auto\"}')"
