"""AGM: Shapley responses and coefficients from loss against its running mean."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from erlmr.methods.agm import shapley_matrix
from support import (
    first_batch,
    joint_gradients,
    method_setup,
    step,
)


def test_agm_boosts_the_modality_whose_loss_falls_behind_its_running_mean():
    alpha = 1.0
    _, _, method, _ = method_setup("agm", {"alpha": alpha})
    method.running_scores.copy_(torch.tensor([1.0, 1.0]))
    method.steps.fill_(10)
    k = method.update_coefficients(torch.tensor([1.5, 1.0]))  # m0's loss rose above its usual level
    assert k[0] > 1 > k[1]
    torch.testing.assert_close(k, torch.exp(alpha * (1 - torch.exp(torch.tensor([-0.5, 0.5])))))
    torch.testing.assert_close(method.running_scores, torch.tensor([(10 + 1.5) / 11, 1.0]))


def test_agm_shapley_weights():
    two = shapley_matrix(2, [(0, 1), (0,), (1,)])
    torch.testing.assert_close(two, torch.tensor([[0.5, 0.5, -0.5], [0.5, -0.5, 0.5]]))
    three = shapley_matrix(3, [(0, 1, 2), (0, 1), (0, 2), (1, 2), (0,), (1,), (2,)])
    torch.testing.assert_close(three.sum(0), torch.tensor([1.0, 0, 0, 0, 0, 0, 0]))  # responses sum to f(all)


def test_agm_responses_follow_the_official_two_modality_formula():
    splits, model, method, _ = method_setup("agm", fusion="gated")
    inputs, _ = first_batch(splits)
    full, responses = method.responses(model, inputs)
    with torch.no_grad():
        model.eval()
        only_m0 = model(inputs, absent=["m1"]).logits
        only_m1 = model(inputs, absent=["m0"]).logits
    torch.testing.assert_close(responses[0], 0.5 * (full.logits - only_m1 + only_m0))
    torch.testing.assert_close(responses[1], 0.5 * (full.logits - only_m0 + only_m1))


@pytest.mark.parametrize("strengths", [(2.5, 0.8), (2.5, 1.0, 0.8)])
def test_agm_scales_each_modalitys_gradient_by_its_coefficient(strengths):
    # With a concat head the model is additive over modalities, so φ_m = modality m's own logits and
    # its encoder's gradient is exactly k_m times the joint one.
    splits, model, method, _ = method_setup("agm", {"alpha": 5.0, "clip_norm": 0.0}, strengths)
    inputs, labels = first_batch(splits)
    reference = joint_gradients(model, inputs, labels)
    full, responses = method.responses(copy.deepcopy(model), inputs)
    for m, response in zip(splits.modalities, responses):
        torch.testing.assert_close(response, full.modality_logits[m])
    result = step(method, model, inputs, labels)
    torch.testing.assert_close(result.loss, F.cross_entropy(full.logits, labels).detach())
    k = method.last_coefficients
    assert max(abs(v - 1) for v in k.values()) > 0.01
    for name, p in model.named_parameters():
        if name.startswith("encoders."):
            torch.testing.assert_close(p.grad, k[name.split(".")[1]] * reference[name], msg=name)


def test_agm_outside_its_window_is_joint_training_but_keeps_its_running_means():
    splits, model, method, _ = method_setup("agm", {"alpha": 5.0, "clip_norm": 0.0, "modulation_end": 0})
    method.on_epoch_start(model, 1)
    inputs, labels = first_batch(splits)
    reference = joint_gradients(model, inputs, labels)
    step(method, model, inputs, labels)
    assert set(method.last_coefficients.values()) == {1.0}
    assert method.steps == 1 and bool((method.running_scores > 0).all())
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, reference[name], msg=name)


def test_agm_window_counts_epochs_from_one_as_the_official_loop():
    """Defaults 0..20 modulate the first 20 epochs (0-based indices 0..19), not 21."""
    splits, model, method, _ = method_setup("agm", {"alpha": 5.0, "clip_norm": 0.0})
    inputs, labels = first_batch(splits)
    method.running_scores.copy_(torch.tensor([5.0, 0.1]))  # a target far from this step's: k ≠ 1 inside
    method.steps.fill_(10)
    for epoch, modulated in ((19, True), (20, False)):
        method.on_epoch_start(model, epoch)
        model.zero_grad(set_to_none=True)
        step(method, model, inputs, labels)
        assert (set(method.last_coefficients.values()) != {1.0}) is modulated, epoch


def test_agm_clips_when_the_output_weight_gradient_leaves_the_unit_range_not_the_bias():
    splits, model, method, _ = method_setup("agm", {"alpha": 0.0, "clip_norm": 0.5})
    inputs, labels = first_batch(splits)
    method.on_epoch_start(model, 0)
    step(method, model, inputs, labels)
    weight, bias = model.head.linear.weight, model.head.linear.bias
    for grad_of_weight, grad_of_bias, clipped in ((0.1, 5.0, False), (5.0, 0.1, True)):
        weight.grad, bias.grad = torch.full_like(weight, grad_of_weight), torch.full_like(bias, grad_of_bias)
        norm = torch.nn.utils.get_total_norm([p.grad for p in model.parameters() if p.grad is not None])
        method.modify_gradients(model, None, labels)
        after = torch.nn.utils.get_total_norm([p.grad for p in model.parameters() if p.grad is not None])
        assert float(after) == pytest.approx(0.5 if clipped else float(norm), rel=1e-4)
