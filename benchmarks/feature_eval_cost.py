"""What the linear probe and the feature maps computed at the end of every run cost, as a share of that run.

Trains each method once (seed 0) and reports the seconds of the whole run (``train()``, data loading
included) and of each part (``summary.json``'s ``cost.linear_probe_s`` and ``cost.feature_maps_s``,
src/erlmr/analysis/features.py), and the parts' share of the run. The parts run in the same process
right after training, so load on a shared machine slows both alike; the shares are the figures to read.

    PYTHONPATH=src python benchmarks/feature_eval_cost.py --dataset avdigits --methods joint,erlmr --epochs 20
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from datetime import datetime, timezone

from erlmr.analysis.cost import machine_description
from erlmr.config import load_config
from erlmr.training.trainer import train


def measure(dataset: str, method: str, epochs: int, device: str, folder: str) -> dict:
    keys = [
        f"data.dataset={dataset}",
        f"method.name={method}",
        f"train.epochs={epochs}",
        f"train.device={device}",
        "train.quiet=true",
        f"train.run_dir={folder}/{method}",
    ]
    started = time.perf_counter()
    summary = train(load_config(None, keys)).summary
    total = time.perf_counter() - started
    cost = summary["cost"]
    return {
        "method": method,
        "run_s": total,
        "probe_s": cost.get("linear_probe_s", 0.0),
        "maps_s": cost.get("feature_maps_s", 0.0),
        "device": cost["device"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="avdigits")
    parser.add_argument("--methods", default="joint,erlmr")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        rows = [measure(args.dataset, m, args.epochs, args.device, folder) for m in args.methods.split(",")]
    print(f"- command: `{shlex.join(['python', *sys.argv])}`")
    print(f"- machine: {machine_description(sorted({r['device'] for r in rows}))}")
    print(f"- date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}\n")
    print("| method | run (s) | linear probe (s) | feature maps (s) | both ÷ run |\n|---|---|---|---|---|")
    for r in rows:
        share = (r["probe_s"] + r["maps_s"]) / r["run_s"]
        print(f"| {r['method']} | {r['run_s']:.1f} | {r['probe_s']:.1f} | {r['maps_s']:.1f} | {share:.1%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
