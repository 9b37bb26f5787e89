import json
from collections import Counter

import pytest
import torch
import torch.nn.functional as F

from erlmr import train
from erlmr.training.trainer import Trainer
from support import take_step


def small_trainer(run_config, method="erlmr", options=None, **sections):
    config = run_config(method={"name": method, "options": options or {}}, **sections)
    config["data"] = {"dataset": "synthetic", "options": {"train_size": 64, "test_size": 32}}
    config["model"] = {"euler_dropout": 0.0, **config.get("model", {})}
    return Trainer(config)


def one_batch(trainer, size=32):
    return trainer.splits.train.__getitems__(list(range(size)))


def test_an_erlmr_step_runs_each_encoder_forward_exactly_once(run_config):
    for mode in ("params", "features"):
        trainer = small_trainer(run_config, options={"pareto_mode": mode})
        calls = Counter()
        for name, encoder in trainer.model.encoders.items():
            encoder.register_forward_hook(lambda *args, name=name: calls.update([name]))
        inputs, labels = one_batch(trainer)
        take_step(trainer.method, trainer.model, inputs, labels)
        assert calls == Counter({"m0": 1, "m1": 1}), mode
        assert all(p.grad is not None for p in trainer.model.shared_parameters())


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


def test_params_mode_writes_the_pareto_weighted_sum_of_both_gradients(run_config):
    trainer = small_trainer(run_config)
    model, method = trainer.model.eval(), trainer.method  # eval: batch norm is deterministic across passes
    inputs, labels = one_batch(trainer)
    g_fusion, g_mmc = reference_gradients(model, erlmr_losses(method), inputs, labels)
    model.zero_grad(set_to_none=True)
    result = take_step(method, model, inputs, labels)
    w = method.last_weights
    assert w.sum().item() == pytest.approx(1.0, abs=1e-6) and 0 < w[0] < 1
    for p, a, b in zip(model.parameters(), g_fusion, g_mmc):
        torch.testing.assert_close(p.grad, w[0] * a + w[1] * b, rtol=1e-4, atol=1e-6)
    assert set(result.logs) >= {"pareto_weight_fusion", "pareto_weight_mmc", "phase_cosine"}


def test_pareto_weights_are_min_norm_over_shared_parameters_only(run_config):
    from erlmr.nn.pareto import min_norm_weights

    trainer = small_trainer(run_config, options={"normalization": "none", "weight_floor": 0.0})
    model, method = trainer.model.eval(), trainer.method
    inputs, labels = one_batch(trainer)
    grads = reference_gradients(model, erlmr_losses(method), inputs, labels)
    shared = {id(p) for p in model.shared_parameters()}
    flat = [torch.cat([g.flatten() for g, p in zip(gs, model.parameters()) if id(p) in shared]) for gs in grads]
    model.zero_grad(set_to_none=True)
    take_step(method, model, inputs, labels)
    torch.testing.assert_close(method.last_weights, min_norm_weights(flat), rtol=1e-3, atol=1e-4)


def test_fixed_weights_when_pareto_is_off(run_config):
    trainer = small_trainer(run_config, options={"pareto": False, "fusion_weight": 0.3, "mmc_weight": 2.0})
    model, method = trainer.model.eval(), trainer.method
    inputs, labels = one_batch(trainer)
    g_fusion, g_mmc = reference_gradients(model, erlmr_losses(method), inputs, labels)
    model.zero_grad(set_to_none=True)
    take_step(method, model, inputs, labels)
    for p, a, b in zip(model.parameters(), g_fusion, g_mmc):
        torch.testing.assert_close(p.grad, 0.3 * a + 2.0 * b, rtol=1e-4, atol=1e-6)


def test_features_mode_solves_on_feature_gradients_then_backpropagates_once(run_config):
    trainer = small_trainer(run_config, options={"pareto_mode": "features"})
    model, method = trainer.model.eval(), trainer.method
    inputs, labels = one_batch(trainer)
    g_fusion, g_mmc = reference_gradients(model, erlmr_losses(method), inputs, labels)
    model.zero_grad(set_to_none=True)
    take_step(method, model, inputs, labels)
    w = method.last_weights
    for p, a, b in zip(model.parameters(), g_fusion, g_mmc):
        torch.testing.assert_close(p.grad, w[0] * a + w[1] * b, rtol=1e-4, atol=1e-6)


def test_run_folder_holds_config_metrics_checkpoints_and_summary(run_config):
    config = run_config(method={"name": "erlmr"}, data={"dataset": "synthetic", "options": {"train_size": 128, "test_size": 64}})
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


def test_model_selection_never_evaluates_the_test_split_before_the_end(run_config, monkeypatch):
    import erlmr.training.trainer as trainer_module

    trainer = small_trainer(run_config, method="joint")
    seen = []
    original = trainer_module.evaluate

    def spy(model, method, split, *args, **kwargs):
        seen.append("test" if split is trainer.splits.test else "val" if split is trainer.splits.val else "other")
        return original(model, method, split, *args, **kwargs)

    monkeypatch.setattr(trainer_module, "evaluate", spy)
    trainer.run()
    assert seen == ["val", "val", "val", "test"]


def test_same_seed_same_result_on_cpu(run_config):
    config = lambda: run_config(method={"name": "erlmr"}, data={"options": {"train_size": 96, "test_size": 64}})
    first, second = train(config()), train(config())
    deterministic = lambda summary: {k: v for k, v in summary.items() if k != "cost"}  # cost holds timings, memory
    assert deterministic(first.summary) == deterministic(second.summary)
    timings = ("epoch_time_s", "step_time_s")
    read = lambda r: [{k: v for k, v in json.loads(l).items() if k not in timings} for l in (r.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert read(first) == read(second)
    third = train(run_config(method={"name": "erlmr"}, data={"options": {"train_size": 96, "test_size": 64}}, train={"seed": 1}))
    assert read(third) != read(first)


def test_erlmr_uses_the_weak_modality_more_than_joint_on_synthetic(run_config):
    """Over several seeds, ERL-MR's weak-modality test accuracy beats joint training's."""
    weak = {}
    for method in ("joint", "erlmr"):
        accuracies = []
        for seed in range(3):
            config = run_config(
                method={"name": method},
                data={"dataset": "synthetic", "options": {"train_size": 600, "test_size": 600}},
                train={"epochs": 10, "seed": seed},
            )
            accuracies.append(train(config).summary["test"]["modality_accuracy"]["m1"])
        weak[method] = sum(accuracies) / len(accuracies)
    assert weak["erlmr"] > weak["joint"] + 0.05, weak


def test_authors_pareto_target_solves_against_twice_the_phase_term(run_config):
    from erlmr.nn.pareto import min_norm_weights

    trainer = small_trainer(run_config, options={"pareto_target": "authors", "weight_floor": 0.0})
    model, method = trainer.model.eval(), trainer.method
    inputs, labels = one_batch(trainer)
    shared = model.shared_parameters()

    def targets(output, labels):
        order = list(output.modality_logits)
        terms = method.mmc.terms([output.phases[m] for m in order], [output.modality_logits[m] for m in order], labels)
        return F.cross_entropy(output.logits, labels), 2 * terms.phase

    output = model(inputs)
    values = targets(output, labels)
    flat = [torch.cat([g.flatten() for g in torch.autograd.grad(v, shared, retain_graph=True, materialize_grads=True)]) for v in values]
    expected = min_norm_weights(flat, torch.stack(values).detach(), "loss+")
    take_step(method, model, inputs, labels)
    torch.testing.assert_close(method.last_weights, expected, rtol=1e-3, atol=1e-4)
