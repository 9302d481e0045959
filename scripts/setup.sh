#!/usr/bin/env bash
# Create .venv with the local CPU torch (never a CUDA download), every dependency at the exact
# version of requirements.lock (the versions the suite was run against; `bash scripts/lock.sh`
# re-resolves them), and relrec itself with all extras.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
. .venv/bin/activate
python -m pip install --quiet --upgrade pip
# torch first and pinned: the CPU build lies on this kind of machine; an unpinned torch pulls CUDA
python -m pip install --quiet "torch==2.13.0"
python -m pip install --quiet -r requirements.lock
python -m pip install --quiet --no-deps -e .
python -m pip check
# Debian's Chromium for the web explorer's browser test (root on CI; skipped if already there)
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  (apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null) \
    || echo "warning: could not install chromium; browser tests will fail" >&2
fi
