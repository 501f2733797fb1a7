#!/usr/bin/env bash
# The README's learning curve and swimmer GIF (docs/img/), made from the default run of `make run`.
# Usage: bash analysis/readme_figures.sh [RUN.h5]   (default runs/default.h5)
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${1:-runs/default.h5}
BIN=.venv/bin
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
$BIN/mpiswim analyze "$RUN" --out "$tmp"
mkdir -p docs/img
cp "$tmp/learning_curve.png" docs/img/learning_curve.png
$BIN/mpiswim render "$RUN" --out docs/img/swimmer.gif --steps 300
ls -l docs/img
