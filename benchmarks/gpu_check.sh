#!/usr/bin/env bash
# One short check on a machine with a CUDA GPU (under 5 minutes), run from anywhere:
#
#   bash benchmarks/gpu_check.sh [OUTPUT_DIR]       (default: $OUT if set, else benchmarks/results)
#
# 1. the training-step cost of every method (float32, bf16 autocast; ERL-MR also at batch 256), ratios to joint;
# 2. an epoch through the real loader (pinned memory, 0 and 2 workers) against in-memory tensors;
# 3. a short ERL-MR training in bf16, both Pareto modes, on avdigits (synthetic data when avdigits is
#    not registered or cannot be loaded within 30 s), then one epoch with torch.compile.
# It uses `python3` (or $PYTHON) with the PyTorch already installed there and stops with a list of
# what is missing otherwise. Reports go to OUTPUT_DIR; the ratios are printed at the end.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
PY="${PYTHON:-python3}"
OUT_DIR="${1:-${OUT:-benchmarks/results}}"
mkdir -p "$OUT_DIR"
RUNS="$(mktemp -d)"
started=$SECONDS

missing=$("$PY" - <<'EOF'
import importlib
missing = []
for module in ("torch", "numpy", "yaml", "tqdm", "scipy", "sklearn"):
    try:
        importlib.import_module(module)
    except ImportError:
        missing.append(module)
if "torch" not in missing:
    import torch
    if not torch.cuda.is_available():
        missing.append(f"a CUDA device visible to torch {torch.__version__} (torch.cuda.is_available() is False)")
print(", ".join(missing))
EOF
)
if [ -n "$missing" ]; then
    echo "gpu_check: cannot run, missing: $missing (pip install torch numpy pyyaml tqdm scipy scikit-learn)" >&2
    exit 1
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true

stage() {  # stage NAME SECONDS COMMAND...: run with a time limit, report failure without stopping
    local name=$1 limit=$2
    shift 2
    echo "=== $name (limit ${limit}s, at $((SECONDS - started))s)"
    timeout "$limit" "$@" || echo "gpu_check: stage '$name' failed or timed out (exit $?)"
}

stage "step cost, float32" 75 "$PY" benchmarks/step_cost.py --device cuda --rounds 40 --warmup 10 \
    --out "$OUT_DIR/step_cost_cuda_fp32.md" >/dev/null
stage "step cost, bf16 autocast" 75 "$PY" benchmarks/step_cost.py --device cuda --amp --rounds 40 --warmup 10 \
    --out "$OUT_DIR/step_cost_cuda_bf16.md" >/dev/null
stage "step cost, bf16 autocast, batch 256, ERL-MR only" 75 "$PY" benchmarks/step_cost.py --device cuda --amp \
    --batch-size 256 --rounds 30 --warmup 5 --out "$OUT_DIR/step_cost_cuda_bf16_b256.md" \
    --methods "erlmr fixed weights,erlmr params,erlmr features,authors' 3-pass reference" >/dev/null
stage "loader" 40 "$PY" benchmarks/loader_cost.py --device cuda --epochs 3 --workers 0,2 \
    --out "$OUT_DIR/loader_cost_cuda.md" >/dev/null

dataset=synthetic
if timeout 30 "$PY" -c "from erlmr.data import load_dataset; load_dataset('avdigits', None, 0, 0.1, {})" >/dev/null 2>&1; then
    dataset=avdigits
fi
echo "=== short training on $dataset, bf16"
for mode in params features; do
    stage "erlmr $mode" 45 "$PY" -m erlmr train --dataset "$dataset" --method erlmr --epochs 3 --device cuda --quiet \
        --set train.amp=true --set method.options.pareto_mode=$mode --out "$RUNS/$mode" | tee "$OUT_DIR/train_$mode.txt"
done
stage "torch.compile, 1 epoch" 60 "$PY" -m erlmr train --dataset "$dataset" --method erlmr --epochs 1 --device cuda --quiet \
    --set train.amp=true --set train.compile=true --set method.options.pareto_mode=features --out "$RUNS/compiled"

echo "=== ratios"
for report in "$OUT_DIR"/step_cost_cuda_*.md "$OUT_DIR"/loader_cost_cuda.md; do
    [ -f "$report" ] && { echo "--- $report"; grep -E '^(###|\| |The )' "$report"; }
done
"$PY" - "$RUNS" <<'EOF'
import json, pathlib, sys
for metrics in sorted(pathlib.Path(sys.argv[1]).glob("*/*/metrics.jsonl")):
    epochs = [json.loads(line) for line in metrics.read_text().splitlines()]
    times = ", ".join(f"{e['epoch_time_s']:.2f}" for e in epochs)
    print(f"{metrics.parent.parent.name}: val accuracy {epochs[-1]['val_accuracy']:.3f}, epoch times s [{times}]")
EOF
echo "gpu_check: done in $((SECONDS - started))s; reports in $OUT_DIR"
