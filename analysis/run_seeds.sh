#!/usr/bin/env bash
# Run one config with several seeds, one after another, for docs/results.md.
# Usage: bash analysis/run_seeds.sh CONFIG.toml NAME SEED [SEED ...]
#   writes runs/experiments/NAME-SEED.toml (CONFIG with [run] seed = SEED)
#   and trains it into runs/experiments/NAME-SEED.h5 (log beside it).
# The number of ranks is the length of the config's [ranks] lists (RANKS=P to override);
# ITERATIONS=N replaces [run] iterations (a later, longer sweep resumes the same files).
# An existing checkpoint is resumed (--resume-if-exists), so a stopped sweep continues.
set -euo pipefail
cd "$(dirname "$0")/.."
config=$1 name=$2
shift 2
BIN=${BIN:-.venv/bin}
ranks=${RANKS:-$($BIN/python -c 'import sys, tomllib; r = tomllib.load(open(sys.argv[1], "rb"))["ranks"]["alpha"]; print(len(r) if isinstance(r, list) else 4)' "$config")}
mkdir -p runs/experiments
for seed in "$@"; do
    run=runs/experiments/$name-$seed
    sed -e "s/^seed = .*/seed = $seed/" -e "s|^out = .*|out = \"$run.h5\"|" "$config" > "$run.toml"
    if [ -n "${ITERATIONS:-}" ]; then sed -i "s/^iterations = .*/iterations = $ITERATIONS/" "$run.toml"; fi
    echo "$(date +%T) $name seed $seed: $ranks ranks -> $run.h5"
    status=0
    $BIN/mpiexec -n "$ranks" $BIN/mpiswim train --config "$run.toml" --resume-if-exists > "$run.log" 2>&1 || status=$?
    echo "$(date +%T) $name seed $seed: exit $status"
    tail -n 1 "$run.log"
done
