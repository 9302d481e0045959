#!/usr/bin/env bash
# The headline table of RESULTS.md: cf and auto (the default preset; `balanced` is its alias) on ml-latest-small beside every peer
# (popularity, co-visitation, EASE users/sessions, ALS, item2vec; each tuned on validation),
# time-true tags, user-level intervals. Validation first (what every choice was made on), then
# the sealed test period read once (counted in the manifest and the ledger).
#   bash scripts/results_ml_latest_small.sh            # writes $OUT/{valid,test}.json
set -euo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
DATA=${RELREC_MOVIELENS:-../shared/data/ml-latest-small}
POSTERS=${RELREC_POSTERS:-../shared/data/ml-latest-small-posters}
OUT=${RELREC_RUN:-runs/results-ml-latest-small}
rm -rf "$OUT"
mkdir -p "$OUT"
relrec prepare --movielens "$DATA" --images "$POSTERS" --out "$OUT/auto"
cp -r "$OUT/auto" "$OUT/cf"          # one prepared split, two models: paired differences
relrec train "$OUT/cf" --preset cf --no-progress
relrec train "$OUT/auto" --preset auto --no-progress
relrec evaluate "$OUT/auto" --against "$OUT/cf" --json > "$OUT/valid.json"
relrec evaluate "$OUT/auto" --against "$OUT/cf"
# ONE read of the sealed test period (a second `--test` would count as a second read)
relrec evaluate "$OUT/auto" --against "$OUT/cf" --test --json > "$OUT/test.json"
python scripts/results_table.py "$OUT/valid.json" "$OUT/test.json"
