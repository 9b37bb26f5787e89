"""Device check for the baselines of part A (unimodal, OGM, OGM-GE, MMCosine, PMR, AGM, compositions).

Every method trains 2 epochs on CUDA (synthetic data, 2 and 3 modalities), then the OGM and AGM
gradient identities (encoder gradient = coefficient × joint gradient) are checked on the GPU.
Run from the repository root: ``python3 benchmarks/gpu_check_baselines_a.py`` (``DEV=cpu`` without a GPU).
"""
import copy
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import erlmr  # noqa: E402
from erlmr.config import ModelConfig  # noqa: E402
from erlmr.data import load_dataset  # noqa: E402
from erlmr.methods import MethodContext, build_method  # noqa: E402
from erlmr.training.trainer import build_model  # noqa: E402

CASES = [
    ("unimodal", {"modality": "m1"}), ("ogm", {}), ("ogm_ge", {}), ("mmcosine", {}), ("pmr", {}), ("agm", {}),
    ("joint+ogm", {}), ("erlmr+ogm_ge", {}), ("pmr+ogm_ge", {}),
]


def train_all(device: torch.device) -> None:
    for strengths in ([2.5, 0.8], [2.5, 1.0, 0.8]):
        for name, options in CASES:
            started = time.time()
            with tempfile.TemporaryDirectory() as folder:
                result = erlmr.train({
                    "data": {"dataset": "synthetic", "options": {"strengths": strengths, "train_size": 256}},
                    "method": {"name": name, "options": options},
                    "train": {"epochs": 2, "batch_size": 32, "quiet": True, "device": device.type, "run_dir": folder + "/run"},
                })
            accuracy = result.summary["test"]["accuracy"]
            print(f"M={len(strengths)} {name:14s} ok  test acc {accuracy:.3f}  {time.time() - started:.1f}s", flush=True)


def check_gradient_scaling(device: torch.device) -> None:
    splits = load_dataset("synthetic", None, 0, 0.1, {"strengths": [2.5, 1.0, 0.8], "dim": 8, "train_size": 64})
    context = MethodContext(splits.modalities, splits.num_classes, 2, 16, device, splits)
    inputs, labels = splits.train.__getitems__(list(range(32)))
    inputs, labels = {m: x.to(device) for m, x in inputs.items()}, labels.to(device)
    for name, options in [("ogm", {"alpha": 0.5}), ("agm", {"alpha": 5.0, "clip_norm": 0.0})]:
        torch.manual_seed(0)
        model = build_model(ModelConfig(), splits, False).to(device)
        twin = copy.deepcopy(model)
        F.cross_entropy(twin(inputs).logits, labels).backward()
        method = build_method(name, options, model, context)
        result = method.training_step(model, inputs, labels)
        method.modify_gradients(model, result, labels)
        k = method.last_coefficients
        error = max(
            float((p.grad - k[n.split(".")[1]] * q.grad).abs().max())
            for (n, p), q in zip(model.named_parameters(), twin.parameters())
            if n.startswith("encoders.")
        )
        print(f"{name}: coefficients {({m: round(v, 4) for m, v in k.items()})}  max |grad − k·joint grad| {error:.2e}")
        assert error < 1e-5


if __name__ == "__main__":
    device = torch.device(os.environ.get("DEV", "cuda"))
    print(torch.__version__, torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu")
    train_all(device)
    check_gradient_scaling(device)
    print("ALL OK")
