#!/usr/bin/env bash
# HalfCheetah-Dir and -Vel, MAML and ANIL, several seeds, at a fixed number of meta-iterations.
# Usage: bash experiments/meta_rl/run_halfcheetah.sh [OUT_DIR] [ITERATIONS] [SEEDS...]
# Each run checkpoints every iteration, so running this again with a larger ITERATIONS continues
# every run where it stopped (e.g. 20 now, 500 on a machine with the time for it).
# Writes OUT_DIR/hc_<env>_<algo>_s<seed>/ (run), .eval.json (40 fresh tasks) and .time (seconds).
set -euo pipefail
out=${1:-runs/meta_rl}
iterations=${2:-20}
shift 2 || true
seeds=("$@")
[ ${#seeds[@]} -gt 0 ] || seeds=(0 1 2)
mkdir -p "$out"
for seed in "${seeds[@]}"; do
  for env in dir vel; do
    for algo in maml anil; do
      run="$out/hc_${env}_${algo}_s${seed}"
      start=$(date +%s)
      metajax train --algo "$algo" --env "halfcheetah-$env" --seed "$seed" --steps "$iterations" \
        --eval-every "$iterations" --workdir "$run" --no-progress \
        $( [ -d "$run/checkpoints" ] && echo --resume )
      end=$(date +%s)
      echo "$((end - start))" >> "$run.time"
      metajax eval "$run" --tasks 40 | tee "$run.eval.json"
    done
  done
done
