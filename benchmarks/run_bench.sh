#!/usr/bin/env bash
# The committed benchmark: every registered method on avdigits (default imbalance: visual dominant),
# avdigits with the imbalance reversed (clean audio, noisy images) and basicmotions, 3 seeds each.
# Resumable: finished runs are skipped, so re-running finishes an interrupted bench.
# Writes benchmarks/results/{avdigits,avdigits_reversed,basicmotions}/ (results.csv, results.md, bench.json,
# run folders), benchmarks/results/report/ (report.html + PNGs) and benchmarks/results/README.md.
# Settings (environment): OUT, SEEDS, JOBS (runs at once, default 2), METHODS (default: every registered
# method, with unimodal once per modality), DEVICE (default auto), EPOCHS_AVDIGITS, EPOCHS_BASICMOTIONS.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON=${PYTHON:-.venv/bin/python}
OUT=${OUT:-benchmarks/results}
SEEDS=${SEEDS:-3}
JOBS=${JOBS:-2}
DEVICE=${DEVICE:-auto}
EPOCHS_AVDIGITS=${EPOCHS_AVDIGITS:-30}
EPOCHS_BASICMOTIONS=${EPOCHS_BASICMOTIONS:-100}
REGISTERED=$("$PYTHON" -c 'from erlmr.methods import METHODS; print(",".join(m for m in METHODS if m != "unimodal"))')
# The registered methods, and unimodal (which needs its modality named) once per modality given.
methods_for() {
    local list=$REGISTERED modality
    for modality in "$@"; do list="$list,unimodal[modality=$modality]"; done
    echo "${METHODS:-$list}"
}
erlmr() { "$PYTHON" -m erlmr "$@"; }
# A failed run (listed in results.md) does not stop the other benches; the script exits 1 at the end.
status=0
bench() {
    local methods=$1
    shift
    echo "methods: $methods"
    erlmr bench --methods "$methods" --seeds "$SEEDS" --jobs "$JOBS" --device "$DEVICE" "$@" || status=1
}

bench "$(methods_for audio visual)" --datasets avdigits --epochs "$EPOCHS_AVDIGITS" --out "$OUT/avdigits"
bench "$(methods_for audio visual)" --datasets avdigits --epochs "$EPOCHS_AVDIGITS" --out "$OUT/avdigits_reversed" \
    --set data.options.audio_snr_db=10 --set data.options.image_sigma=10
bench "$(methods_for acc gyro)" --datasets basicmotions --epochs "$EPOCHS_BASICMOTIONS" --out "$OUT/basicmotions"
erlmr report "$OUT" --out "$OUT/report"
{
    echo "# Benchmark: every method on avdigits (default and reversed imbalance) and basicmotions"
    echo
    echo "Made by \`bash benchmarks/run_bench.sh\` (SEEDS=$SEEDS JOBS=$JOBS DEVICE=$DEVICE" \
         "EPOCHS_AVDIGITS=$EPOCHS_AVDIGITS EPOCHS_BASICMOTIONS=$EPOCHS_BASICMOTIONS). Plots: report/report.html."
    for part in avdigits avdigits_reversed basicmotions; do
        echo
        tail -n +3 "$OUT/$part/results.md"
    done
} > "$OUT/README.md"
echo "done: $OUT/README.md, $OUT/report/report.html"
exit $status
