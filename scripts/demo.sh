#!/usr/bin/env bash
# The ML core end to end in about a minute on a CPU: train a tiny model on real ABID bins, evaluate it,
# count full-size photos. Reads ../shared/abid (or $BINWATCH_ABID); writes runs/demo.
set -euo pipefail
cd "$(dirname "$0")/.."
ABID=${BINWATCH_ABID:-../shared/abid}
BIN=.venv/bin
$BIN/binwatch data summary "$ABID"
$BIN/binwatch train "$ABID" --recipe smoke --limit 400 --out runs/demo
$BIN/binwatch evaluate runs/demo/best.pt "$ABID" --split val --limit 300 --out runs/demo/eval-val
$BIN/binwatch predict -c runs/demo/best.pt "$ABID"/originals/000*.jpg
