#!/usr/bin/env bash
# compare.sh A:B ...: `metajax compare` of OUT/A/seed_s with OUT/B/seed_t for consecutive seeds
# (s, t) = (s0, s1), (s1, s2), ..., (sn, s0): pairs of different seeds, as Raghu et al. compare.
# Writes OUT/compare/A--B/seed_s-seed_t/compare.json.
set -euo pipefail
OUT=${OUT:-runs/raghu_omniglot_5w1s}
SEEDS=${SEEDS:-0,1,2}
COMPARE_TASKS=${COMPARE_TASKS:-50}
IFS=, read -r -a seeds <<< "$SEEDS"
n=${#seeds[@]}
for pair in "$@"; do
  a=${pair%%:*}; b=${pair##*:}
  for ((i = 0; i < n; i++)); do
    s=${seeds[$i]}; t=${seeds[$(( (i + 1) % n ))]}
    dest="$OUT/compare/$a--$b/seed_$s-seed_$t"
    [ -f "$dest/compare.json" ] && continue
    metajax compare "$OUT/$a/seed_$s" "$OUT/$b/seed_$t" --out "$dest" \
      --similarity cca,cka,cka_debiased --tasks "$COMPARE_TASKS" --chunk 10 > /dev/null
  done
done
