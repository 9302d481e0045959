#!/usr/bin/env bash
# Re-resolve the newest versions of every dependency (relrec[all]) in a throw-away venv and
# write them to requirements.lock. Run the full suite against the new lock before committing:
#   bash scripts/lock.sh && rm -rf .venv && bash scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
"$PYTHON" -m venv "$scratch/venv"
"$scratch/venv/bin/python" -m pip install --quiet --upgrade pip
# the local CPU build of torch first: an unpinned torch would pull a multi-GB CUDA build
"$scratch/venv/bin/python" -m pip install --quiet "torch==2.13.0"
"$scratch/venv/bin/python" -m pip install --quiet ".[all]"
{
  echo "# Exact versions the suite was run against: bash scripts/lock.sh re-resolves them."
  echo "# torch is installed first, on its own, as the local CPU build (scripts/setup.sh)."
  "$scratch/venv/bin/python" -m pip freeze --exclude-editable | grep -v -E '^(relrec|torch)=='
} > requirements.lock
echo "wrote requirements.lock ($(grep -vc '^#' requirements.lock) packages)"
