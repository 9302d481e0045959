#!/usr/bin/env bash
# The full test suite, exactly what CI runs (browser, bad-input and distributed tests included).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
python -m pytest -q -p no:cacheprovider "$@"
