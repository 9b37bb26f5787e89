"""AMCo: the modality holding most of the probability mass gets ⌊p·D⌋ feature dimensions masked."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from erlmr.methods.amco import dependency_shares, mask_fraction
from erlmr.training.step import method_step
from support import first_batch, method_setup, step_context


def test_mask_fraction_ramps_with_training_progress():
    assert [round(mask_fraction(e, 0.3), 4) for e in (0, 1, 2, 3, 7)] == [
        0.0,
        0.5,
        round(math.sin(math.pi / 3), 4),
        1.0,
        1.0,
    ]
    assert mask_fraction(1.5, 0.3) == pytest.approx(math.sin(math.pi / 2 * 0.15 / 0.3))


def test_dependency_shares_are_block_masses_of_one_softmax_over_all_logits():
    a, b = torch.tensor([[2.0, 0.0], [1.0, 1.0]]), torch.tensor([[0.0, 0.0], [3.0, -1.0]])
    p = torch.cat([a, b], 1).softmax(1)
    expected = torch.stack([p[:, :2].sum(1).mean(), p[:, 2:].sum(1).mean()])
    torch.testing.assert_close(dependency_shares([a, b]), expected)


def amco_step(options: dict, epoch: int, index: int, seed: int = 7):
    """One AMCo step with m0 made dominant (its head block × 20), the draws seeded; what a hand
    computation needs alongside the result."""
    splits, model, method, _ = method_setup("amco", options)
    model.eval()  # no dropout: the only random draw is the mask's
    with torch.no_grad():
        model.head.linear.weight[:, :16] *= 20
    inputs, labels = first_batch(splits)
    method.on_epoch_start(model, epoch)
    torch.manual_seed(seed)
    result = method_step(method, model, inputs, labels, step_context(method, model, index=index, steps_per_epoch=4))
    return model, method, inputs, labels, result


def expected_loss(model, method, inputs, labels, masked_dims: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        output = model(inputs)
        z0 = output.features["m0"].clone()
        z0[:, masked_dims] = 0
        fused = method.linear_star(model.head([z0, output.features["m1"]]).logits)
        unimodal = sum(F.cross_entropy(output.modality_logits[m], labels) for m in ("m0", "m1"))
        return F.cross_entropy(fused, labels) + unimodal


def test_amco_masks_half_the_dominant_features_in_epoch_one_and_trains_each_modality():
    model, method, inputs, labels, result = amco_step({}, epoch=1, index=0)
    assert float(result.logs["amco_share_m0"]) > 0.5 > float(result.logs["amco_share_m1"])
    assert float(result.logs["amco_mask_fraction"]) == pytest.approx(0.5)
    torch.manual_seed(7)
    dims = torch.randperm(16)[:8]  # ⌊0.5 · 16⌋ dimensions of z_0, none of z_1
    torch.testing.assert_close(result.loss, expected_loss(model, method, inputs, labels, dims))
    assert method.linear_star.weight.grad is not None


@pytest.mark.parametrize("options, epoch", [({"sigma": 1.0}, 1), ({}, 0)])
def test_amco_masks_nothing_without_a_dependent_modality_or_at_the_start(options, epoch):
    model, method, inputs, labels, result = amco_step(options, epoch=epoch, index=0)
    nothing = torch.tensor([], dtype=torch.long)
    torch.testing.assert_close(result.loss, expected_loss(model, method, inputs, labels, nothing))


def test_amco_outside_its_window_is_cross_entropy_through_linear_star():
    model, method, inputs, labels, result = amco_step({"modulation_end": 0}, epoch=1, index=0)
    with torch.no_grad():
        expected = F.cross_entropy(method.linear_star(model(inputs).logits), labels)
    torch.testing.assert_close(result.loss, expected)
    torch.testing.assert_close(method.predict(model, inputs).logits, method.linear_star(model(inputs).logits))
