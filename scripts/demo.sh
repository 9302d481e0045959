#!/usr/bin/env bash
# The main job end to end on real data: prepare → train (auto) → evaluate → related lists.
# Data: ../shared/data/ml-latest-small (or $RELREC_MOVIELENS; `relrec download ml-latest-small`
# fetches it from the official site into ~/.cache/relrec/datasets).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
DATA=${RELREC_MOVIELENS:-../shared/data/ml-latest-small}
POSTERS=${RELREC_POSTERS:-../shared/data/ml-latest-small-posters}
RUN=${RELREC_RUN:-runs/ml-latest-small}
IMAGES=()
[ -d "$POSTERS" ] && IMAGES=(--images "$POSTERS")
# --overwrite: a rerun of the demo replaces its own run folder as a whole
relrec prepare --movielens "$DATA" "${IMAGES[@]}" --out "$RUN" --overwrite
# --preset auto (the default): cf, then candidates that use title/tag text and posters (embedded
# on first use, cached), each scored on the validation period; the rule in README picks one
relrec train "$RUN"
# every choice above was made on the validation period; this is what evaluate reports by default
relrec evaluate "$RUN"
# the sealed test period, read once: the read is counted in the manifest and the ledger
relrec evaluate "$RUN" --test
for item in 1 260 2571 296; do   # Toy Story, Star Wars, The Matrix, Pulp Fiction
  relrec recommend "$RUN" "$item" --k 10
done
