#!/usr/bin/env bash
# Running observation normalisation on every MuJoCo body (docs/results.md, "Every body with running normalisation"):
# the embedded default config (`mpiswim config`: 4 ranks here) with [policy] normalisation = "running", and
# without it, ITERATIONS (100) iterations each. Writes results/bodies/<Body>-<running|none>-<seed>.h5 (log beside it);
# a stopped sweep resumes (--resume-if-exists).
# Usage: bash analysis/bodies.sh [BODY:SEEDS ...]   e.g. Swimmer:0,1,2 Hopper:0 (default: the table's runs)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
iterations=${ITERATIONS:-100}
ranks=${RANKS:-4}
runs=("$@")
if [ ${#runs[@]} -eq 0 ]; then runs=(Swimmer:0,1,2 Hopper:0 HalfCheetah:0 Walker2d:0 Ant:0 Humanoid:0); fi
mkdir -p results/bodies
for entry in "${runs[@]}"; do
    body=${entry%%:*}
    IFS=, read -ra seeds <<< "${entry#*:}"
    for seed in "${seeds[@]}"; do
        for normalisation in running none; do
            run=results/bodies/$body-$normalisation-$seed
            echo "$(date +%T) $body-v5 seed $seed, normalisation $normalisation -> $run.h5"
            status=0
            $BIN/mpiexec -n "$ranks" $BIN/mpiswim train --set "env.id=$body-v5" --set "policy.normalisation=$normalisation" \
                --set "run.seed=$seed" --set "run.name=$body-$normalisation-$seed" \
                --out "$run.h5" --iterations "$iterations" --resume-if-exists >> "$run.log" 2>&1 || status=$?
            echo "$(date +%T) $body seed $seed $normalisation: exit $status"
            tail -n 1 "$run.log"
        done
    done
done
