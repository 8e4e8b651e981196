#!/usr/bin/env bash
# Raghu et al. (2020) Table 1, Omniglot 20-way 1-shot: MAML, ANIL and NIL (the ANIL run with no
# head at test time) under the paper's protocol (configs raghu_table1_omniglot20w1s_{maml,anil}:
# Finn's model with the spatial mean before the head and offset-only batch norm kept out of the
# inner loop, meta-batch 16, 5 inner steps of 0.1, 10 at test time), mean +- sd over seeds.
# Writes OUT/table1.md (and OUT/*.eval.json).
# Environment (defaults: the CPU budget; the paper's in brackets, a GPU job):
#   DATA=../shared/data/omniglot  OUT=runs/raghu_omniglot_20w1s
#   SEEDS=0 [0,1,2]   STEPS=1000 [60000]   TASKS=600
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
DATA=${DATA:-../shared/data/omniglot}
OUT=${OUT:-runs/raghu_omniglot_20w1s}
SEEDS=${SEEDS:-0}
STEPS=${STEPS:-1000}
TASKS=${TASKS:-600}
mkdir -p "$OUT"
for algo in maml anil; do
  first=${SEEDS%%,*}
  if [ ! -f "$OUT/$algo/seed_$first/checkpoints/config.json" ]; then
    rm -rf "${OUT:?}/$algo"
    start=$(date +%s)
    metajax train --workdir "$OUT/$algo" --config "raghu_table1_omniglot20w1s_$algo" \
      --data-dir "$DATA" --seeds "$SEEDS" --steps "$STEPS" --checkpoint-every "$STEPS" \
      --eval-every 100000 --log-every 100 --no-progress
    echo "$(( $(date +%s) - start ))" > "$OUT/$algo.time"
  fi
  for head in learned nil; do
    [ -f "$OUT/$algo.$head.eval.json" ] ||
      metajax eval "$OUT/$algo" --tasks "$TASKS" --head "$head" > "$OUT/$algo.$head.eval.json"
  done
done
python "$here/../raghu_tables.py" table1 "$OUT" | tee "$OUT/table1.md"
