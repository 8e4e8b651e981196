#!/usr/bin/env bash
# The runs Raghu et al.'s Tables 3, 5 and 6 are measured on (Omniglot 5-way 1-shot here):
# bodies trained by MAML, ANIL, multiclass pretraining and multitask training, each for every
# seed, and fresh 5-way heads trained with MAML on the frozen multiclass, multitask and random
# bodies. Shared by experiments/raghu_table{3,5,6}/run.sh; a run directory that already holds
# its checkpoints is kept (delete it to retrain).
#
# Environment (defaults: the CPU budget; the paper's budget in brackets, a GPU job):
#   DATA=../shared/data/omniglot  OUT=runs/raghu_omniglot_5w1s
#   SEEDS=0,1,2 [0,1,2]   STEPS=1000 [30000]   HEAD_STEPS=500 [30000]   META_BATCH=8 [32]
#   BATCH_SIZE=64 (multiclass images per step)
#   CURVE_POINTS=5: the MAML and multiclass runs keep this many checkpoints, evenly spaced, for
#   the curves over training (experiments/raghu_figures: Fig 2 right, Fig 5, Goerttler Fig 1)
set -euo pipefail
DATA=${DATA:-../shared/data/omniglot}
OUT=${OUT:-runs/raghu_omniglot_5w1s}
SEEDS=${SEEDS:-0,1,2}
STEPS=${STEPS:-1000}
HEAD_STEPS=${HEAD_STEPS:-500}
META_BATCH=${META_BATCH:-8}
BATCH_SIZE=${BATCH_SIZE:-64}
CURVE_POINTS=${CURVE_POINTS:-5}
curve=(--checkpoint-every "$(( STEPS / CURVE_POINTS > 0 ? STEPS / CURVE_POINTS : 1 ))"
       --keep-checkpoints "$CURVE_POINTS")
mkdir -p "$OUT"
# Finn et al.'s Omniglot 5-way 1-shot settings for every regime (omniglot_maml: Conv4 64 filters,
# 1 inner step of 0.4 in training, 10 at test time, 5 queries per class, Adam 1e-3).
common=(--data-dir "$DATA" --seeds "$SEEDS" --meta-batch "$META_BATCH" --no-progress
        --eval-every 100000 --log-every 50)

train() {  # train NAME ARGS...: OUT/NAME, skipped when its first seed already finished
  local name=$1; shift
  local first=${SEEDS%%,*}
  if [ -f "$OUT/$name/seed_$first/checkpoints/config.json" ]; then
    echo "kept $OUT/$name"; return
  fi
  rm -rf "${OUT:?}/$name"
  local start; start=$(date +%s)
  metajax train --workdir "$OUT/$name" "${common[@]}" "$@"
  echo "$(( $(date +%s) - start ))" > "$OUT/$name.time"
}

train maml       --config omniglot_maml --steps "$STEPS" "${curve[@]}"
train anil       --config omniglot_anil --steps "$STEPS" --checkpoint-every "$STEPS"
train multiclass --config omniglot_maml --algo multiclass --batch-size "$BATCH_SIZE" \
                 --meta-batch 1 --steps "$STEPS" "${curve[@]}"
train multitask  --config omniglot_maml --algo multitask --steps "$STEPS" \
                 --checkpoint-every "$STEPS"
# A new 5-way head trained with MAML on each frozen body (seed s on seed s's body).
for body in multiclass multitask; do
  train "${body}_head" --config omniglot_maml --init-from "$OUT/$body" --train head \
                       --steps "$HEAD_STEPS" --checkpoint-every "$HEAD_STEPS"
done
train random_head --config omniglot_maml --init-from random --train head \
                  --steps "$HEAD_STEPS" --checkpoint-every "$HEAD_STEPS"
