#!/usr/bin/env bash
# Which of the seed library's ingredients changes the seed's run? Each seed-faithful option alone, added to
# configs/seed-swimmer.toml (the seed's pool with mpiswim's own signed map), 10 ranks, seed 0, ITERATIONS (100).
# Writes results/seed-ablations/<option>.h5 (log beside it); a stopped sweep resumes (--resume-if-exists).
# Usage: bash analysis/seed_ablations.sh [OPTION ...]   (default: all of them; see docs/results.md)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
iterations=${ITERATIONS:-100}
declare -A option=(
    [shared-intercept]="policy.intercept=shared"
    [running-normalisation]="policy.normalisation=running"
    [target-after-update]="policy.baseline_target=after-update"
    [float32]="policy.precision=float32"
    [eta-travels]="policy.eta_travels=true"
    [common-action-noise]="pool.common_action_noise=true"
)
names=("$@")
if [ ${#names[@]} -eq 0 ]; then names=(common-action-noise running-normalisation shared-intercept target-after-update float32 eta-travels); fi
mkdir -p results/seed-ablations
for name in "${names[@]}"; do
    run=results/seed-ablations/$name
    echo "$(date +%T) $name (--set ${option[$name]}) -> $run.h5"
    status=0
    $BIN/mpiexec -n 10 $BIN/mpiswim train --config configs/seed-swimmer.toml --set "${option[$name]}" --set "run.name=seed-swimmer+$name" \
        --out "$run.h5" --iterations "$iterations" --resume-if-exists >> "$run.log" 2>&1 || status=$?
    echo "$(date +%T) $name: exit $status"
    tail -n 1 "$run.log"
done
