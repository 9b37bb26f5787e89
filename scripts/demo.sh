#!/usr/bin/env bash
# The main job: on AV-digits (spoken digits from espeak-ng + handwritten digits; audio weak, images
# dominant), train joint, ERL-MR and every baseline with 3 seeds on the CPU, print fused and
# per-modality test accuracy (mean ± std over seeds), and plot per-modality validation accuracy over
# epochs per method. Finished runs are kept in runs/demo and skipped when the script runs again.
# Extra arguments go to `erlmr bench`, e.g. --seeds 5 or --methods joint,erlmr.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup.sh
# Builds AV-digits once (cached in ~/.cache/erlmr); without espeak-ng it says how to install it.
.venv/bin/erlmr data avdigits --clips 2000 --seed 0 --if-missing
OUT=${OUT:-runs/demo}
.venv/bin/erlmr bench --datasets avdigits --methods "all,unimodal[modality=audio],unimodal[modality=visual]" \
    --seeds 3 --epochs 15 --jobs 2 --out "$OUT" "$@"
.venv/bin/erlmr report "$OUT" --out "$OUT/report" >/dev/null
echo "plots: $OUT/report/report.html; per-modality validation accuracy over epochs: $OUT/report/avdigits-val-accuracy.png"
