#!/usr/bin/env bash
# Raghu et al. (2020) Table 6 on Omniglot 5-way 1-shot: CCA and CKA similarity of the bodies of
# multiclass pretraining, random features and multitask training to MAML's, and of MAML to
# MAML, each pair across different seeds (seed s against seed s+1). Writes OUT/table6.md.
# Usage: bash experiments/raghu_table6/run.sh   (environment: see ../raghu_table5/train.sh;
#   COMPARE_TASKS=50 test tasks per comparison)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
OUT=${OUT:-runs/raghu_omniglot_5w1s}
export OUT
bash "$here/../raghu_table5/train.sh"
bash "$here/../raghu_table3/compare.sh" maml:maml multiclass_head:maml random_head:maml \
  multitask_head:maml
python "$here/../raghu_tables.py" table6 "$OUT" | tee "$OUT/table6.md"
