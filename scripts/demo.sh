#!/usr/bin/env bash
# The main job: joint training vs ERL-MR on the offline datasets, a few seeds, one comparison table.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup.sh
exec .venv/bin/erlmr bench --datasets basicmotions,synthetic --methods joint,erlmr --seeds 3 --quiet --out runs/demo "$@"
