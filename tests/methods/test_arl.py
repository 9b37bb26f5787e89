"""ARL: γ-weighted unimodal losses, encoder gradients × (1 + w_m) with the inverse-variance × bias weights."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from erlmr.methods.arl import arl_weights
from support import first_batch, method_setup, setup_three, take_step


def official_two_modality_weights(out_a: torch.Tensor, out_v: torch.Tensor, temperature: float) -> torch.Tensor:
    """The official main_arl_variance.py computation, written out step by step for two modalities."""
    calc_a, calc_b = out_a.abs().mean(0).sum(), out_v.abs().mean(0).sum()
    p_a, p_v = out_a.softmax(1), out_v.softmax(1)
    h_a = (-p_a * torch.log(p_a + 1e-16)).sum(1).mean()
    h_v = (-p_v * torch.log(p_v + 1e-16)).sum(1).mean()
    h_a, h_v = (h_a / (h_a + h_v)).clamp(min=0.3), (h_v / (h_a + h_v)).clamp(min=0.3)
    a_weight, v_weight = 1 / h_a, 1 / h_v
    calc_a, calc_b = calc_a / (calc_a + calc_b), calc_b / (calc_a + calc_b)
    a_weight, v_weight = a_weight / (a_weight + v_weight), v_weight / (a_weight + v_weight)
    return torch.softmax(torch.stack([calc_b * a_weight * temperature, calc_a * v_weight * temperature]), 0)


def test_arl_weights_match_the_official_formula_and_really_vary():
    generator = torch.Generator().manual_seed(0)
    confident = 4 * torch.randn(32, 5, generator=generator)  # low entropy, large logits
    unsure = 0.3 * torch.randn(32, 5, generator=generator)
    weights = arl_weights([confident, unsure], temperature=8.0)
    torch.testing.assert_close(weights, official_two_modality_weights(confident, unsure, 8.0))
    assert abs(float(weights[0] - weights[1])) > 0.05  # the released code's constant 0.5 would fail this
    same = arl_weights([confident, confident.clone()], temperature=8.0)
    torch.testing.assert_close(same, torch.full((2,), 0.5))
    three = arl_weights([confident, unsure, confident], temperature=4.0)
    assert three.sum() == pytest.approx(1.0) and three[0] == pytest.approx(float(three[2]))


def loss_gradients(model, inputs, labels, gamma: float) -> dict[str, torch.Tensor]:
    """Every parameter's gradient of ``CE(ℓ) + γ Σ CE(ℓ_m)`` by a plain backward on a copy."""
    twin = copy.deepcopy(model)
    output = twin(inputs)
    loss = F.cross_entropy(output.logits, labels)
    loss = loss + gamma * sum(F.cross_entropy(x, labels) for x in output.modality_logits.values())
    loss.backward()
    return {name: p.grad for name, p in twin.named_parameters()}


@pytest.mark.parametrize("three", [False, True])
def test_arl_scales_each_encoder_by_one_plus_its_weight_after_warmup(three):
    if three:
        splits, model, method = setup_three("arl", {"clip_norm": 0, "warmup_epochs": 1})
    else:
        splits, model, method, _ = method_setup("arl", {"clip_norm": 0, "warmup_epochs": 1})
    method.on_epoch_start(model, 1)
    inputs, labels = first_batch(splits)
    reference = loss_gradients(model, inputs, labels, gamma=4.0)
    with torch.no_grad():
        logits = list(model(inputs).modality_logits.values())
    weights = arl_weights(logits, 8.0)
    take_step(method, model, inputs, labels)
    torch.testing.assert_close(method.weights, weights)
    assert weights.max() - weights.min() > 1e-3, "the batch should weight the modalities differently"
    scale = dict(zip(splits.modalities, (1 + weights).tolist()))
    for name, p in model.named_parameters():
        k = scale[name.split(".")[1]] if name.startswith("encoders.") else 1.0
        torch.testing.assert_close(p.grad, reference[name] * k, msg=name)


def test_arl_warmup_is_plain_unimodal_assistance():
    splits, model, method, _ = method_setup("arl", {"clip_norm": 0})
    method.on_epoch_start(model, 5)  # official --start 5: epoch 5 is still warm-up
    inputs, labels = first_batch(splits)
    reference = loss_gradients(model, inputs, labels, gamma=1.0)
    result = take_step(method, model, inputs, labels)
    assert float(result.logs["arl_weight_m0"]) == 0.0
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, reference[name], msg=name)


def test_arl_clips_to_its_norm():
    splits, model, method, _ = method_setup("arl", {"clip_norm": 1e-3})
    inputs, labels = first_batch(splits)
    take_step(method, model, inputs, labels)
    norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters() if p.grad is not None]))
    assert float(norm) == pytest.approx(1e-3, rel=1e-4)
