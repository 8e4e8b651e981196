#!/usr/bin/env bash
# Feature-reuse studies on the Omniglot 5-way 1-shot MAML / ANIL / FOMAML runs of
# experiments/omniglot_5w1s (read only). Writes OUT/<run>/<study>.{json,png} and OUT/times.txt.
# Usage: bash experiments/feature_reuse/run.sh [RUNS_DIR] [OUT_DIR] [STUDY...]
# STUDY: similarity weights rsa freeze compare (default: all).
set -euo pipefail
runs=${1:-runs/omniglot_5w1s}
out=${2:-experiments/feature_reuse}
shift 2 || true
studies=("$@")
[ ${#studies[@]} -gt 0 ] || studies=(similarity weights rsa freeze compare)
mkdir -p "$out"
timed() {  # timed NAME COMMAND...: runs it, appends "NAME seconds" to OUT/times.txt
  local name=$1; shift
  local start=$(date +%s.%N)
  "$@"
  echo "$name $(echo "$(date +%s.%N) - $start" | bc)" >> "$out/times.txt"
}
for study in "${studies[@]}"; do
  case $study in
    similarity) for algo in maml anil; do
        timed "similarity/$algo" metajax analyze "$runs/$algo" --out "$out/$algo" \
          --similarity cca,svcca,pwcca,cka,cka_debiased,rsa --tasks 100 --query 15; done ;;
    weights) for algo in maml anil; do
        timed "weight_distance/$algo" metajax analyze "$runs/$algo" --out "$out/$algo" \
          --weight-distance --tasks 100; done ;;
    rsa) for algo in maml anil; do
        timed "rsa/$algo" metajax analyze "$runs/$algo" --out "$out/$algo" --rsa --tasks 50 \
          --query 15; done ;;
    freeze) timed "freeze/maml" metajax analyze "$runs/maml" --out "$out/maml" --freeze --tasks 600 ;;
    compare) for pair in "maml anil" "maml fomaml" "anil fomaml"; do
        set -- $pair
        timed "compare/$1-$2" metajax compare "$runs/$1" "$runs/$2" --out "$out/compare_$1_$2" \
          --similarity cca,svcca,cka,cka_debiased --tasks 100 --query 15; done ;;
    *) echo "unknown study $study" >&2; exit 2 ;;
  esac
done
