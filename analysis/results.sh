#!/usr/bin/env bash
# The tables and curves of docs/results.md, from the runs committed under results/.
# Usage: bash analysis/results.sh   (about 10 minutes: the evaluations run 50 episodes per run, T and action)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
out=docs/results
mkdir -p "$out"
# How soon each config reaches 150, its best, its cost; curves against the seed's milestones.
$BIN/python analysis/milestones.py results/seed-*.h5 results/crn-signed-*.h5 results/improved-1*.h5 results/improved-mean-eval-*.h5 \
    results/unit-density-*.h5 --at 1 20 75 150 200 400 --target 150 --out "$out/milestones.md" --plot "$out/seed_vs_improved.png"
# Round 3: the improved config scored on the Beta mean (and with 20 update episodes), against the target of 175.
$BIN/python analysis/milestones.py results/improved-1*.h5 results/improved-mean-eval-*.h5 results/improved-u20-*.h5 --at 1 20 50 75 150 200 300 400 \
    --target 175 --out "$out/milestones-175.md" --plot "$out/round3.png"
# Round 1 of part 2: candidates on the signed coding, next to crn-signed (seed config + common evaluation).
$BIN/python analysis/milestones.py results/crn-signed-*.h5 results/crn-u20-*.h5 results/crn-log-1*.h5 results/crn-g99-*.h5 \
    results/crn-spread-*.h5 results/crn-scaled-*.h5 --target 150 --out "$out/candidates.md" --plot "$out/candidates.png"
# Round 2: the linear feature map and what was tried with it, next to the improved config.
$BIN/python analysis/milestones.py results/improved-1*.h5 results/crn-lin-*.h5 --at 1 10 20 40 80 200 \
    --target 150 --out "$out/candidates-linear.md" --plot "$out/candidates-linear.png"
# The 4-rank embedded default (make run, seeds 0-2), scored on draws (the old default) and on the Beta mean.
$BIN/python analysis/milestones.py results/default-sample-*.h5 results/default-mean-*.h5 --at 1 10 20 75 120 \
    --target 150 --out "$out/milestones-default.md"
$BIN/python analysis/evaluate_runs.py results/default-sample-*.h5 results/default-mean-*.h5 \
    --T 500 --actions sample mean --episodes 50 --seed 1 --out "$out/evaluation-default.md"
# Full-length training (T = 1000): the improved config, its log-density variant, and with the T = 500 alphas.
$BIN/python analysis/milestones.py results/improved-t1000-*.h5 results/lin-log-time-t1000-*.h5 results/lin-t1000-alpha1x-*.h5 \
    --target 300 --at 1 10 20 40 60 --out "$out/milestones-t1000.md"
# Each run's best agent evaluated again on fresh episodes, at T = 500 and at full length (T = 1000),
# with Beta draws (as in training) and with the Beta mean (the deterministic controller).
$BIN/python analysis/evaluate_runs.py results/seed-*.h5 results/crn-signed-*.h5 results/improved-1*.h5 results/improved-mean-eval-*.h5 results/improved-t1000-*.h5 \
    --T 500 1000 --actions sample mean --episodes 50 --seed 1 --out "$out/evaluation.md"
ls -l "$out"
