#!/usr/bin/env bash
# Raghu et al. (2020) Table 5 on Omniglot 5-way 1-shot: test accuracy of five training regimes
# of the body (MAML, ANIL, multiclass pretraining, multitask training, random features), each
# with its own head adapted at test time ("MAML head") and with no head (NIL), mean +- sd over
# seeds. Writes OUT/table5.md (and the evaluations OUT/*.eval.json).
# Usage: bash experiments/raghu_table5/run.sh   (environment: see train.sh; TASKS=600)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
OUT=${OUT:-runs/raghu_omniglot_5w1s}
TASKS=${TASKS:-600}
export OUT
bash "$here/train.sh"
for run in maml anil multiclass_head multitask_head random_head; do
  for head in learned nil; do
    [ -f "$OUT/$run.$head.eval.json" ] ||
      metajax eval "$OUT/$run" --tasks "$TASKS" --inner-steps 10 --head "$head" \
        > "$OUT/$run.$head.eval.json"
  done
done
python "$here/../raghu_tables.py" table5 "$OUT" | tee "$OUT/table5.md"
