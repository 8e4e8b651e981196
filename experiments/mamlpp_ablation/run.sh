#!/usr/bin/env bash
# MAML++ ablation on Omniglot 20-way 1-shot at a fixed CPU budget: MAML, MAML + each part, all parts.
# Every variant gets the same number of meta-steps (sized for a 2-core CPU), then 600 test tasks.
# Usage: bash experiments/mamlpp_ablation/run.sh [DATA_DIR] [OUT_DIR] [VARIANTS...]
# Writes OUT_DIR/<variant>/ (run), OUT_DIR/<variant>.eval.json, OUT_DIR/<variant>.time (seconds);
# then `python experiments/mamlpp_ablation/summarize.py OUT_DIR` prints the table.
set -euo pipefail
data_dir=${1:-../shared/data/omniglot}
out=${2:-runs/mamlpp_ablation}
shift 2 || true
# The CPU budget by default; the paper's (a GPU job): STEPS=75000 META_BATCH=16 INNER_STEPS=5 (QUERY: queries per class)
steps=${STEPS:-300}
meta_batch=${META_BATCH:-8}
inner_steps=${INNER_STEPS:-2}
query=${QUERY:-2}
variants=("$@")
[ ${#variants[@]} -gt 0 ] || variants=(maml msl bnwb bnrs lslr da ca all)
common=(--config omniglot_maml --data-dir "$data_dir" --ways 20 --shots 1 --query "$query"
        --meta-batch "$meta_batch" --inner-steps "$inner_steps" --eval-inner-steps "$inner_steps"
        --inner-lr 0.4 --steps "$steps"
        --eval-every "$steps" --eval-tasks 100 --checkpoint-every 100 --no-progress)
anneal=$((steps / 3))  # MSL annealing and DA's first-order phase: the first third, as in the paper
mkdir -p "$out"
for v in "${variants[@]}"; do
  case $v in
    maml) parts=(--algo maml) ;;
    msl)  parts=(--algo mamlpp --msl true --msl-anneal-steps "$anneal") ;;
    bnwb) parts=(--algo mamlpp --bnwb true) ;;
    bnrs) parts=(--algo mamlpp --bnrs true) ;;
    lslr) parts=(--algo mamlpp --lslr true) ;;
    da)   parts=(--algo mamlpp --da-steps "$anneal") ;;
    ca)   parts=(--algo mamlpp --meta-lr-schedule cosine) ;;
    all)  parts=(--algo mamlpp --msl true --msl-anneal-steps "$anneal" --bnwb true --bnrs true
                 --lslr true --da-steps "$anneal" --meta-lr-schedule cosine) ;;
    *) echo "unknown variant $v" >&2; exit 2 ;;
  esac
  [ -f "$out/$v.eval.json" ] && continue
  start=$(date +%s)
  metajax train "${common[@]}" "${parts[@]}" --workdir "$out/$v" \
    $( [ -d "$out/$v/checkpoints" ] && echo --resume )
  echo "$(( $(date +%s) - start ))" > "$out/$v.time"
  metajax eval "$out/$v" --tasks 600 > "$out/$v.eval.json.tmp"
  mv "$out/$v.eval.json.tmp" "$out/$v.eval.json"
done
# BNRS variants evaluate with their running statistics by default; every other variant (and the
# paper's reference code) normalises test queries with the batch's statistics. The table's main
# column is batch statistics for every row, so the BNRS runs are evaluated that way too.
for v in "${variants[@]}"; do
  case $v in bnrs|all) ;; *) continue ;; esac
  [ -f "$out/$v.batch.eval.json" ] && continue
  metajax eval "$out/$v" --tasks 600 --bn-stats batch > "$out/$v.batch.eval.json.tmp"
  mv "$out/$v.batch.eval.json.tmp" "$out/$v.batch.eval.json"
done
