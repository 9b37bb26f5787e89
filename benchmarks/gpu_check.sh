#!/usr/bin/env bash
# The CUDA measurements of docs/performance.md, on a machine with a CUDA GPU (about 9 minutes on an
# H100/H200, every stage under its own time limit), run from anywhere:
#
#   bash benchmarks/gpu_check.sh [OUTPUT_DIR]       (default: $OUT if set, else benchmarks/results)
#   DEV=cpu bash benchmarks/gpu_check.sh DIR        (every stage in a tiny size on the CPU: checks the script)
#
#  1. step cost of every method on the small networks (avdigits, sensor), float32 and bf16, with the
#     whole step as a CUDA graph (train.cuda_graphs) beside the eager step;
#  2. the same in bf16 with the whole step compiled (train.compile) for joint and ERL-MR features;
#  3. ResNet-18 at CREMA-D shapes, batch 64, bf16: every method, channels-last and CUDA-graph variants;
#     then three frames per clip, ERL-MR's rows only;
#  4. full epochs of a CREMA-D-sized stand-in (6,698 clips, 3.3 GiB) from the memory-mapped cache with
#     0, 2 and 4 loader workers, against the same epochs from device-resident tensors;
#  5. short trainings: ERL-MR features eager, with the CUDA-graph step and compiled; the ratios at the end.
# It uses `python3` (or $PYTHON) with the PyTorch already installed there and stops with a list of
# what is missing otherwise. Reports go to OUTPUT_DIR (suffix _cuda, or _cpucheck with DEV=cpu).
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src:$PWD/benchmarks${PYTHONPATH:+:$PYTHONPATH}"
PY="${PYTHON:-python3}"
DEV="${DEV:-cuda}"
OUT_DIR="${1:-${OUT:-benchmarks/results}}"
mkdir -p "$OUT_DIR"
RUNS="$(mktemp -d)"
started=$SECONDS

missing=$(DEV="$DEV" "$PY" - <<'EOF'
import importlib, os
missing = []
for module in ("torch", "numpy", "yaml", "tqdm"):
    try:
        importlib.import_module(module)
    except ImportError:
        missing.append(module)
if "torch" not in missing and os.environ["DEV"] == "cuda":
    import torch
    if not torch.cuda.is_available():
        missing.append(f"a CUDA device visible to torch {torch.__version__} (torch.cuda.is_available() is False)")
print(", ".join(missing))
EOF
)
if [ -n "$missing" ]; then
    echo "gpu_check: cannot run, missing: $missing (pip install torch numpy pyyaml tqdm)" >&2
    exit 1
fi
[ "$DEV" = cuda ] && { nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true; }

stage() {  # stage NAME SECONDS COMMAND...: run with a time limit, report failure without stopping
    local name=$1 limit=$2
    shift 2
    echo "=== $name (limit ${limit}s, at $((SECONDS - started))s)"
    timeout "$limit" "$@" || echo "gpu_check: stage '$name' failed or timed out (exit $?)"
}

if [ "$DEV" = cuda ]; then
    SUFFIX=cuda ROUNDS="--rounds 30 --warmup 5" BIG="--rounds 20 --warmup 5" COMPILE="" EPOCH="--epochs 2"
    SMALL=avdigits,sensor TRAIN="--epochs 3" EVERY=()
else  # DEV=cpu: the same stages, tiny, to check the script itself
    SUFFIX=cpucheck ROUNDS="--rounds 1 --warmup 1" BIG="--rounds 1 --warmup 1 --batch-size 2" COMPILE="--compile-backend aot_eager"
    EPOCH="--epochs 1 --clips 8 --batch-size 4 --workers 0,1" SMALL=mlp TRAIN="--epochs 1" EVERY=(--methods "erlmr features")
fi
ERLMR="erlmr fixed weights,erlmr params,erlmr features"
DATASET=synthetic

stage "step cost, small networks, float32, eager and CUDA graph" 120 "$PY" benchmarks/step_cost.py --device "$DEV" $ROUNDS \
    --workloads "$SMALL" --variants graphs --out "$OUT_DIR/step_cost_${SUFFIX}_fp32.md" >/dev/null
stage "step cost, small networks, bf16, eager and CUDA graph" 120 "$PY" benchmarks/step_cost.py --device "$DEV" --amp $ROUNDS \
    --workloads "$SMALL" --variants graphs --out "$OUT_DIR/step_cost_${SUFFIX}_bf16.md" >/dev/null
stage "step cost, avdigits, bf16, compiled step" 200 "$PY" benchmarks/step_cost.py --device "$DEV" --amp $ROUNDS $COMPILE \
    --workloads "${SMALL%%,*}" --methods "erlmr features" --variants compile --out "$OUT_DIR/step_cost_${SUFFIX}_bf16_compiled.md" >/dev/null
stage "step cost, ResNet-18 at CREMA-D shapes, bf16" 150 "$PY" benchmarks/step_cost.py --device "$DEV" --amp $BIG \
    --workloads resnet18 "${EVERY[@]}" --variants channels-last,graphs --out "$OUT_DIR/step_cost_${SUFFIX}_resnet18_bf16.md" >/dev/null
stage "step cost, ResNet-18, three frames, bf16, ERL-MR" 90 "$PY" benchmarks/step_cost.py --device "$DEV" --amp $BIG \
    --workloads resnet18 --frames 3 --methods "$ERLMR" --out "$OUT_DIR/step_cost_${SUFFIX}_resnet18_3frames_bf16.md" >/dev/null
stage "epochs from the memory-mapped cache against device tensors" 180 "$PY" benchmarks/epoch_cost.py --device "$DEV" $EPOCH \
    --out "$OUT_DIR/epoch_cost_${SUFFIX}.md" >/dev/null

if [ "$DEV" = cuda ] && timeout 30 "$PY" -c "from erlmr.data import load_dataset; load_dataset('avdigits', None, 0, 0.1, {})" >/dev/null 2>&1; then
    DATASET=avdigits
fi
echo "=== short trainings on $DATASET: ERL-MR features, eager, CUDA graph (refused on a CPU), compiled (CUDA only)"
train() {  # train NAME LIMIT OVERRIDES...
    local name=$1 limit=$2
    shift 2
    stage "train $name" "$limit" "$PY" -m erlmr train --dataset "$DATASET" --method erlmr $TRAIN --device "$DEV" --quiet \
        --set method.options.pareto_mode=features --set train.seed=0 "$@" --out "$RUNS/$name" | tee "$OUT_DIR/train_${SUFFIX}_$name.txt"
}
train eager 60
train graphs 60 --set train.cuda_graphs=true
[ "$DEV" = cuda ] && train compiled 120 --set train.compile=true

echo "=== ratios"
for report in "$OUT_DIR"/step_cost_"$SUFFIX"_*.md "$OUT_DIR"/epoch_cost_"$SUFFIX".md; do
    [ -f "$report" ] && { echo "--- $report"; grep -E '^(###|\| |The |ERL-MR|First)' "$report"; }
done
"$PY" - "$RUNS" <<'EOF'
import json, pathlib, sys
for metrics in sorted(pathlib.Path(sys.argv[1]).glob("*/*/metrics.jsonl")):
    epochs = [json.loads(line) for line in metrics.read_text().splitlines()]
    times = ", ".join(f"{e['epoch_time_s']:.2f}" for e in epochs)
    losses = ", ".join(f"{e['train_loss']:.4f}" for e in epochs)
    print(f"{metrics.parent.parent.name}: train loss [{losses}], val accuracy {epochs[-1]['val_accuracy']:.3f}, epoch s [{times}]")
EOF
echo "gpu_check: done in $((SECONDS - started))s; reports in $OUT_DIR"
