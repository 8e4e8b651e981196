#!/usr/bin/env bash
# Omniglot 5-way 1-shot: train MAML and ANIL on the CPU, then score each on 600 test tasks.
# Usage: bash experiments/omniglot_5w1s/run.sh [DATA_DIR] [OUT_DIR] [ALGOS...]
# Writes OUT_DIR/<algo>/ (run directory), OUT_DIR/<algo>.eval.json and OUT_DIR/<algo>.time.
set -euo pipefail
data_dir=${1:-../shared/data/omniglot}
out=${2:-runs/omniglot_5w1s}
shift 2 || true
algos=("$@")
[ ${#algos[@]} -gt 0 ] || algos=(anil maml)
mkdir -p "$out"
for algo in "${algos[@]}"; do
  start=$(date +%s)
  metajax train --config "omniglot_${algo}" --data-dir "$data_dir" --workdir "$out/$algo" \
    --no-progress $( [ -d "$out/$algo/checkpoints" ] && echo --resume )
  end=$(date +%s)
  echo "$((end - start))" > "$out/$algo.time"
  metajax eval "$out/$algo" --tasks 600 --inner-steps 10 | tee "$out/$algo.eval.json"
done
