#!/usr/bin/env bash
# The main job end to end on real data: prepare → train (balanced) → evaluate → related lists.
# Data: ../shared/data/ml-latest-small (or $RELREC_MOVIELENS; `relrec download` fetches it).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
DATA=${RELREC_MOVIELENS:-../shared/data/ml-latest-small}
POSTERS=${RELREC_POSTERS:-../shared/data/ml-latest-small-posters}
RUN=${RELREC_RUN:-runs/ml-latest-small}
IMAGES=()
[ -d "$POSTERS" ] && IMAGES=(--images "$POSTERS")
relrec prepare --movielens "$DATA" "${IMAGES[@]}" --out "$RUN"
# the recommended operating point: CF + title/tag text + posters (embedded on first use, cached),
# logQ, then the content blend of the ranking chosen on the validation period
relrec train "$RUN" --preset balanced
relrec evaluate "$RUN"
for item in 1 260 2571 296; do   # Toy Story, Star Wars, The Matrix, Pulp Fiction
  relrec recommend "$RUN" "$item" --k 10
done
