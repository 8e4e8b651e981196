#!/usr/bin/env bash
# Raghu et al. (2020) Table 3 on Omniglot 5-way 1-shot: CCA and CKA similarity of MAML-MAML,
# ANIL-ANIL and ANIL-MAML bodies, each pair from different seeds (the committed comparisons of
# experiments/feature_reuse share one initialisation). Writes OUT/table3.md.
# Usage: bash experiments/raghu_table3/run.sh   (environment: see ../raghu_table5/train.sh)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
OUT=${OUT:-runs/raghu_omniglot_5w1s}
export OUT
bash "$here/../raghu_table5/train.sh"
bash "$here/compare.sh" maml:maml anil:anil anil:maml
python "$here/../raghu_tables.py" table3 "$OUT" | tee "$OUT/table3.md"
