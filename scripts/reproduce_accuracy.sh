#!/usr/bin/env bash
# Reproduces docs/accuracy.md's final figures from scratch in one command: sets up the venv, trains the
# default recipe (cpu-lite0, the bundled model's) on the manifest's train split, evaluates best.pt on the
# val split (plain and with flip test-time augmentation) and prints the log rows. Training took 29 min on
# both cores of this 2-core CPU; TRAIN_ARGS="--recipe cpu-best" repeats issue 5's from-scratch ResNet.
#
#   bash scripts/reproduce_accuracy.sh [OUT]        # OUT defaults to runs/reproduce-<timestamp>
#
# Environment: BINWATCH_ABID (default ../shared/abid); TRAIN_ARGS / EVAL_ARGS are appended to the train
# and evaluate commands (e.g. TRAIN_ARGS="--limit 300 --epochs 1" for a quick check of the script itself).
set -euo pipefail
cd "$(dirname "$0")/.."
ABID=${BINWATCH_ABID:-../shared/abid}
OUT=${1:-runs/reproduce-$(date +%Y%m%d-%H%M%S)}
BIN=.venv/bin
make --no-print-directory venv
# shellcheck disable=SC2086 # TRAIN_ARGS/EVAL_ARGS are word lists on purpose
$BIN/binwatch train "$ABID" --out "$OUT" ${TRAIN_ARGS:-}
# shellcheck disable=SC2086
$BIN/binwatch evaluate "$OUT/best.pt" "$ABID" --split val --out "$OUT/eval-val" ${EVAL_ARGS:-}
# shellcheck disable=SC2086
$BIN/binwatch evaluate "$OUT/best.pt" "$ABID" --split val --tta --out "$OUT/eval-val-tta" ${EVAL_ARGS:-}
$BIN/python benchmarks/accuracy_table.py "$OUT" "$OUT/eval-val" "$OUT/eval-val-tta"
echo "confusion matrix: $OUT/eval-val/confusion_matrix.png; training curves: $OUT/training_curves.png"
