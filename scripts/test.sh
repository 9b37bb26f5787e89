#!/usr/bin/env bash
# Runs the whole test suite from a fresh clone: set-up included. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ERLMR_SYSTEM_PACKAGES=(espeak-ng:espeak-ng chromium:chromium)
source scripts/setup.sh
exec .venv/bin/python -m pytest -q "$@"
