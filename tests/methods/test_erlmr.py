"""ERL-MR's step: the Pareto-weighted gradients of the fusion CE and the MMC loss, in both modes, as the paper
describes."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
import torch.nn.functional as F

from erlmr import min_norm_weights, train
from erlmr.errors import ConfigError
from erlmr.nn.pareto import min_norm_weights_from_gram
from support import one_batch, small_trainer, take_step


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


def test_an_erlmr_step_runs_each_encoder_forward_exactly_once(run_config):
    for mode in ("params", "features"):
        trainer = small_trainer(run_config, options={"pareto_mode": mode})
        calls = Counter()
        for name, encoder in trainer.model.encoders.items():
            encoder.register_forward_hook(lambda *args, name=name, calls=calls: calls.update([name]))
        inputs, labels = one_batch(trainer)
        take_step(trainer.method, trainer.model, inputs, labels)
        assert calls == Counter({"m0": 1, "m1": 1}), mode
        assert all(p.grad is not None for p in trainer.model.shared_parameters())


def test_params_mode_writes_the_pareto_weighted_sum_of_both_gradients(run_config):
    trainer = small_trainer(run_config)
    model, method = trainer.model.eval(), trainer.method  # eval: batch norm is deterministic across passes
    inputs, labels = one_batch(trainer)
    g_fusion, g_mmc = reference_gradients(model, erlmr_losses(method), inputs, labels)
    model.zero_grad(set_to_none=True)
    result = take_step(method, model, inputs, labels)
    w = method.last_weights
    torch.testing.assert_close(w, hand_computed_default_weights(model, method, inputs, labels), rtol=1e-3, atol=1e-5)
    for p, a, b in zip(model.parameters(), g_fusion, g_mmc):
        torch.testing.assert_close(p.grad, w[0] * a + w[1] * b, rtol=1e-4, atol=1e-6)
    assert set(result.logs) >= {"pareto_weight_fusion", "pareto_weight_mmc", "phase_cosine"}


def hand_computed_default_weights(model, method, inputs, labels) -> torch.Tensor:
    """The default weights worked out longhand: each loss's gradient on the shared parameters divided by
    (loss · its norm) ('loss+'), the two-point min-norm γ = ⟨v₁ − v₀, v₁⟩ / ‖v₀ − v₁‖² in [0, 1], then
    clamped to [0.001, 0.999] (``weight_floor``)."""
    shared = model.shared_parameters()
    losses = erlmr_losses(method)(model(inputs), labels)
    vectors = []
    for loss in losses:
        g = torch.cat([x.flatten() for x in torch.autograd.grad(loss, shared, retain_graph=True, allow_unused=False)])
        vectors.append(g.double() / (float(loss.detach()) * g.double().norm()))
    v0, v1 = vectors
    gamma = float(torch.dot(v1 - v0, v1) / (v0 - v1).square().sum())
    gamma = min(max(min(max(gamma, 0.0), 1.0), 0.001), 0.999)
    return torch.tensor([gamma, 1 - gamma], dtype=torch.float32)


def test_default_weights_follow_the_hand_computation_batch_by_batch(run_config):
    """On two different batches the default weights equal the longhand computation and differ from each
    other: a solver that returned a constant (or only the clamp) would fail here."""
    trainer = small_trainer(run_config)
    model, method = trainer.model.eval(), trainer.method
    seen = []
    for start in (0, 32):
        inputs, labels = trainer.splits.train.__getitems__(list(range(start, start + 32)))
        model.zero_grad(set_to_none=True)
        take_step(method, model, inputs, labels)
        seen.append(method.last_weights.clone())
        torch.testing.assert_close(
            seen[-1], hand_computed_default_weights(model, method, inputs, labels), rtol=1e-3, atol=1e-5
        )
    assert not torch.allclose(seen[0], seen[1])


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
    flat = [
        torch.cat([g.flatten() for g in torch.autograd.grad(v, shared, retain_graph=True, materialize_grads=True)])
        for v in values
    ]
    expected = min_norm_weights(flat, torch.stack(values).detach(), "loss+")
    take_step(method, model, inputs, labels)
    torch.testing.assert_close(method.last_weights, expected, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("normalization", ["none", "l2", "loss", "loss+"])
def test_the_gram_matrix_alone_gives_the_same_weights(normalization):
    generator = torch.Generator().manual_seed(0)
    grads = torch.randn(2, 50, generator=generator) * torch.tensor([[3.0], [0.01]])
    losses = torch.tensor([0.7, 2.0])
    gram = grads.double() @ grads.double().T
    torch.testing.assert_close(
        min_norm_weights_from_gram(gram, losses, normalization), min_norm_weights(grads, losses, normalization)
    )


def test_params_mode_stays_exact_when_one_gradient_is_ten_thousand_times_smaller(run_config):
    """The Gram matrix comes from norms of unit gradients (polarisation); it must not lose the small one."""
    trainer = small_trainer(
        run_config,
        options={"normalization": "none", "weight_floor": 0.0, "phase_weight": 1e-6, "modality_ce_weight": 1e-6},
    )
    trainer.model.eval()
    inputs, labels = trainer.splits.train.__getitems__(list(range(32)))
    g_fusion, g_mmc = each_loss_gradient(trainer, inputs, labels)
    shared = {id(p) for p in trainer.model.shared_parameters()}
    flat = [
        torch.cat([g.flatten() for g, p in zip(gs, trainer.model.parameters()) if id(p) in shared])
        for gs in (g_fusion, g_mmc)
    ]
    assert flat[1].norm() < 1e-4 * flat[0].norm()
    trainer.model.zero_grad(set_to_none=True)
    take_step(trainer.method, trainer.model, inputs, labels)
    w = trainer.method.last_weights
    torch.testing.assert_close(w, min_norm_weights(flat), rtol=1e-5, atol=1e-7)
    assert w[1] > 0.99  # the min-norm point sits next to the tiny gradient
    for p, a, b in zip(trainer.model.parameters(), g_fusion, g_mmc):
        torch.testing.assert_close(p.grad, w[0] * a + w[1] * b, rtol=1e-4, atol=1e-9)


def test_without_the_euler_map_the_mmc_loss_is_the_per_modality_cross_entropy_alone(run_config):
    trainer = small_trainer(run_config, model={"euler": False})
    model, method = trainer.model.eval(), trainer.method
    assert model.euler is None
    inputs, labels = one_batch(trainer)
    result = take_step(method, model, inputs, labels)
    output = model(inputs)
    ce = sum(F.cross_entropy(output.modality_logits[m], labels) for m in model.modalities)
    torch.testing.assert_close(result.logs["mmc_loss"], ce.detach())
    with pytest.raises(ConfigError, match="needs the Euler map"):
        small_trainer(run_config, options={"pareto_target": "authors"}, model={"euler": False})
