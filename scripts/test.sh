#!/usr/bin/env bash
# Runs the whole test suite from a fresh clone: set-up included. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# pg_ctlcluster comes with Debian's postgresql (its initdb and pg_ctl are in /usr/lib/postgresql/*/bin):
# the tuning test starts a server of its own.
ERLMR_SYSTEM_PACKAGES=(espeak-ng:espeak-ng chromium:chromium pg_ctlcluster:postgresql)
source scripts/setup.sh
exec .venv/bin/python -m pytest -q "$@"
