#!/usr/bin/env bash
# Curves over training from the seed-0 MAML run of experiments/raghu_table5/train.sh (Omniglot
# 5-way 1-shot, CURVE_POINTS checkpoints), and the same studies on the multiclass (plainly
# supervised) run as Goerttler & Obermayer's control:
#   Raghu et al. Fig 2 left  (CCA / debiased CKA of each layer before vs after adaptation)
#   Raghu et al. Fig 2 right (test accuracy with layers frozen at test time, over training)
#   Raghu et al. Fig 5       (per-layer weight distance before vs after adaptation)
#   Goerttler Fig 1a/1b      (RSA of each layer to the random init / to the previous checkpoint)
# Writes OUT/figures/{maml,multiclass}/*.{json,png} and OUT/figures.md.
# Usage: bash experiments/raghu_figures/run.sh   (environment: see raghu_table5/train.sh)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
OUT=${OUT:-runs/raghu_omniglot_5w1s}
SEEDS=${SEEDS:-0,1,2}
FREEZE_TASKS=${FREEZE_TASKS:-200}
export OUT SEEDS
bash "$here/../raghu_table5/train.sh"
seed=${SEEDS%%,*}
maml="$OUT/maml/seed_$seed" figures="$OUT/figures"
mkdir -p "$figures/maml" "$figures/multiclass"
[ -f "$figures/maml/similarity.json" ] ||
  metajax analyze "$maml" --out "$figures/maml" --similarity cca,cka_debiased --tasks 100 --query 15
[ -f "$figures/maml/weight_distance.json" ] ||
  metajax analyze "$maml" --out "$figures/maml" --weight-distance --tasks 100
# The multiclass run's test-time adaptation fits a fresh head on a fixed body, so adaptation
# leaves its body unchanged by construction: only the RSA over training is a study of it.
for run in maml multiclass; do
  [ -f "$figures/$run/rsa.json" ] ||
    metajax analyze "$OUT/$run/seed_$seed" --out "$figures/$run" --rsa --tasks 50
done
[ -f "$figures/maml/freeze.json" ] ||
  metajax analyze "$maml" --out "$figures/maml" --freeze --checkpoints all --tasks "$FREEZE_TASKS"
python "$here/summarize.py" "$OUT/figures" | tee "$OUT/figures.md"
