"""The training loop: the run folder it writes, model selection on validation only, determinism."""

from __future__ import annotations

import json

import torch
import torch.nn.functional as F

from erlmr import train


def reference_gradients(model, losses_fn, inputs, labels):
    """Each loss's gradient on every parameter, from separate forward passes (no tricks)."""
    grads = []
    for index in range(2):
        model.zero_grad()
        losses_fn(model(inputs), labels)[index].backward()
        grads.append([p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in model.parameters()])
    return grads


def erlmr_losses(method):
    def losses(output, labels):
        order = list(output.modality_logits)
        mmc = method.mmc([output.phases[m] for m in order], [output.modality_logits[m] for m in order], labels)
        return F.cross_entropy(output.logits, labels), mmc

    return losses


def each_loss_gradient(trainer, inputs, labels):
    model, method = trainer.model, trainer.method
    grads = []
    for index in range(2):
        model.zero_grad(set_to_none=True)
        output = model(inputs)
        order = model.modalities
        mmc = method.mmc([output.phases[m] for m in order], [output.modality_logits[m] for m in order], labels)
        (F.cross_entropy(output.logits, labels), mmc)[index].backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    return grads


def test_run_folder_holds_config_metrics_checkpoints_and_summary(run_config):
    config = run_config(
        method={"name": "erlmr"}, data={"dataset": "synthetic", "options": {"train_size": 128, "test_size": 64}}
    )
    result = train(config)
    files = {p.name for p in result.run_dir.iterdir()}
    assert {"config.yaml", "metrics.jsonl", "best.pt", "last.pt", "summary.json"} <= files
    lines = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [line["epoch"] for line in lines] == [0, 1]
    for line in lines:
        assert {"train_loss", "val_accuracy", "val_modality_accuracy"} <= set(line)
        assert set(line["val_modality_accuracy"]) == {"m0", "m1"}
        assert {"pareto_weight_fusion", "pareto_weight_mmc", "phase_cosine"} <= set(line["method"])
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert summary["method"] == "erlmr" and summary["dataset"] == "synthetic" and summary["seed"] == 0
    assert summary["best_epoch"] in (0, 1)
    assert {"accuracy", "macro_f1", "modality_accuracy"} <= set(summary["test"])
    assert "accuracy" in summary["val"]
    assert set(summary["test"]["linear_probe"]) == set(summary["val"]["linear_probe"]) == {"m0", "m1"}
    assert summary["linear_probe"]["rows"]["test"] == 64 and summary["feature_maps"]["points"] == 64
    assert "feature_maps.npz" in files


def test_same_seed_same_result_on_cpu(run_config):
    def config():
        return run_config(method={"name": "erlmr"}, data={"options": {"train_size": 96, "test_size": 64}})

    def deterministic(summary):
        return {k: v for k, v in summary.items() if k != "cost"}  # cost holds timings, memory

    timings = ("epoch_time_s", "step_time_s")

    def read(r):
        return [
            {k: v for k, v in json.loads(line).items() if k not in timings}
            for line in (r.run_dir / "metrics.jsonl").read_text().splitlines()
        ]

    first, second = train(config()), train(config())
    assert deterministic(first.summary) == deterministic(second.summary)
    assert read(first) == read(second)
    third = train(
        run_config(method={"name": "erlmr"}, data={"options": {"train_size": 96, "test_size": 64}}, train={"seed": 1})
    )
    assert read(third) != read(first)
