#!/usr/bin/env bash
# Smoke-level demonstration of bench + report (joint and erlmr on basicmotions and synthetic, 3 seeds),
# committed in benchmarks/smoke/. The full benchmark is benchmarks/run_bench.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON=${PYTHON:-.venv/bin/python}
OUT=${OUT:-benchmarks/smoke}
"$PYTHON" -m erlmr bench --datasets basicmotions,synthetic --methods joint,erlmr --seeds 3 --jobs "${JOBS:-2}" \
    --device "${DEVICE:-auto}" --out "$OUT"
"$PYTHON" -m erlmr report "$OUT" --out "$OUT/report"
