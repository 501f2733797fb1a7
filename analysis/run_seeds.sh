#!/usr/bin/env bash
# Run one config with several seeds, one after another, for docs/results.md.
# Usage: bash analysis/run_seeds.sh CONFIG.toml NAME SEED [SEED ...]
#   trains CONFIG with --set run.seed=SEED into $OUT_DIR/NAME-SEED.h5 (default runs/experiments;
#   log beside it).
# The number of ranks is the length of the config's [ranks] lists (RANKS=P to override);
# ITERATIONS=N sets the iterations (a later, longer sweep resumes the same files);
# SET="section.key=value ..." adds --set overrides (space-separated).
# An existing checkpoint is resumed (--resume-if-exists), so a stopped sweep continues.
set -euo pipefail
cd "$(dirname "$0")/.."
config=$1 name=$2
shift 2
BIN=${BIN:-.venv/bin}
ranks=${RANKS:-$($BIN/python -c 'import sys, tomllib; r = tomllib.load(open(sys.argv[1], "rb"))["ranks"]["alpha"]; print(len(r) if isinstance(r, list) else 4)' "$config")}
out_dir=${OUT_DIR:-runs/experiments}
mkdir -p "$out_dir"
for seed in "$@"; do
    run=$out_dir/$name-$seed
    iterations=()
    if [ -n "${ITERATIONS:-}" ]; then iterations=(--iterations "$ITERATIONS"); fi
    for override in ${SET:-}; do iterations+=(--set "$override"); done
    echo "$(date +%T) $name seed $seed: $ranks ranks -> $run.h5"
    status=0
    $BIN/mpiexec -n "$ranks" $BIN/mpiswim train --config "$config" --set "run.seed=$seed" --out "$run.h5" "${iterations[@]}" \
        --resume-if-exists >> "$run.log" 2>&1 || status=$?
    echo "$(date +%T) $name seed $seed: exit $status"
    tail -n 1 "$run.log"
done
