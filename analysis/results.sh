#!/usr/bin/env bash
# The tables and curves of docs/results.md, from the runs committed under results/.
# Usage: bash analysis/results.sh   (about 5 minutes: the evaluations run 50 episodes per run and T)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
out=docs/results
mkdir -p "$out"
# Part 1 and 2: how soon each config reaches 150, its best, its cost; curves against the seed's milestones.
$BIN/python analysis/milestones.py results/seed-*.h5 results/improved-*.h5 results/unit-density-*.h5 \
    --target 150 --out "$out/milestones.md" --plot "$out/seed_vs_improved.png"
# The candidates screened for part 2 (shorter runs), next to the improved config.
$BIN/python analysis/milestones.py results/improved-*.h5 results/crn-*.h5 \
    --target 150 --out "$out/candidates.md" --plot "$out/candidates.png"
# Each run's best agent evaluated again on fresh episodes, at T = 500 and at full length (T = 1000).
$BIN/python analysis/evaluate_runs.py results/seed-*.h5 results/improved-*.h5 \
    --T 500 1000 --episodes 50 --seed 1 --out "$out/evaluation.md"
ls -l "$out"
