#!/usr/bin/env bash
# The tuned benchmark (docs/protocol.md): every registered method on AV-digits (default imbalance: visual
# dominant) tuned on the validation split with the same number of trials and epochs, then trained at its
# defaults and at its best setting with SEEDS seeds; a table of default against tuned test accuracy and
# per-modality accuracy, and the report with each method's validation score over trials.
# Resumable: the studies and finished runs are kept, so re-running finishes an interrupted benchmark.
# Settings (environment): OUT, TRIALS, EPOCHS, SEEDS, WORKERS (tuning processes sharing the studies),
# JOBS (benchmark runs at once), DEVICE, METHODS (default: every method, unimodal once per modality), TUNE_ARGS
# (more flags for erlmr tune, e.g. "--prune-startup 3"), BENCH_ARGS (more flags for the final bench, e.g.
# "--set train.linear_probe=false") and DEFAULTS_FROM: the output folder of an `erlmr bench` of the same
# methods, seeds, epochs and flags whose runs stand for the default rows instead of being trained again
# (`erlmr bench --tuned` refuses a copied run whose settings or data fingerprint differ from its own).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON=${PYTHON:-.venv/bin/python}
OUT=${OUT:-benchmarks/results/tuned}
TRIALS=${TRIALS:-20}
EPOCHS=${EPOCHS:-20}
SEEDS=${SEEDS:-3}
WORKERS=${WORKERS:-2}
JOBS=${JOBS:-2}
DEVICE=${DEVICE:-auto}
METHODS=${METHODS:-all,unimodal[modality=audio],unimodal[modality=visual]}
erlmr() { "$PYTHON" -m erlmr "$@"; }

erlmr data avdigits --clips 2000 --seed 0 --if-missing
# The workers share the studies in OUT/tune/study.db; each gets an even share of the cores.
threads=$(( $(nproc) / WORKERS > 0 ? $(nproc) / WORKERS : 1 ))
pids=()
for _ in $(seq "$WORKERS"); do
    # shellcheck disable=SC2086  # TUNE_ARGS holds several flags
    OMP_NUM_THREADS=$threads erlmr tune --dataset avdigits --method "$METHODS" --trials "$TRIALS" --epochs "$EPOCHS" \
        --device "$DEVICE" --out "$OUT/tune" --quiet ${TUNE_ARGS:-} &
    pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid"; done
if [ -n "${DEFAULTS_FROM:-}" ]; then
    mkdir -p "$OUT/avdigits"
    cp -rn "$DEFAULTS_FROM/avdigits/." "$OUT/avdigits/"
fi
# shellcheck disable=SC2086  # BENCH_ARGS holds several flags
erlmr bench --tuned "$OUT/tune" --seeds "$SEEDS" --jobs "$JOBS" --device "$DEVICE" --out "$OUT" ${BENCH_ARGS:-}
erlmr report "$OUT" --out "$OUT/report"
echo "done: $OUT/results.md (default against tuned), $OUT/tune/tuning.md, $OUT/report/report.html"
