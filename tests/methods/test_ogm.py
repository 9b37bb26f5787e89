"""OGM and OGM-GE: the dominant modality's encoder gradients are scaled (and noised) as the paper says."""

from __future__ import annotations

import pytest
import torch

from erlmr.errors import ConfigError
from support import (
    assert_encoder_scaling,
    expected_ogm_coefficients,
    first_batch,
    joint_gradients,
    method_setup,
    step,
    true_class_sums,
)


@pytest.mark.parametrize("strengths", [(2.5, 0.8), (2.5, 1.0, 0.8)])
def test_ogm_scales_each_encoder_by_its_coefficient_and_leaves_the_head(strengths):
    alpha = 0.5
    splits, model, method, _ = method_setup("ogm", {"alpha": alpha}, strengths)
    inputs, labels = first_batch(splits)
    reference = joint_gradients(model, inputs, labels)
    result = step(method, model, inputs, labels)
    expected = expected_ogm_coefficients(true_class_sums(result.output, splits.modalities, labels), alpha)
    assert expected.min() < 0.99, "the batch should have a dominant modality"
    assert (expected == 1).any(), "and a modality that is not shrunk"
    coefficients = dict(zip(splits.modalities, expected.tolist()))
    assert method.last_coefficients == pytest.approx(coefficients)
    assert float(result.logs["ogm_coefficient_m0"]) == pytest.approx(coefficients["m0"])
    assert_encoder_scaling(model, reference, coefficients)


def test_ogm_does_nothing_outside_its_window():
    splits, model, method, _ = method_setup("ogm", {"alpha": 0.5, "modulation_end": 1})
    method.on_epoch_start(model, 2)
    inputs, labels = first_batch(splits)
    reference = joint_gradients(model, inputs, labels)
    step(method, model, inputs, labels)
    assert set(method.last_coefficients.values()) == {1.0}
    assert_encoder_scaling(model, reference, dict.fromkeys(splits.modalities, 1.0))


def test_ogm_ge_adds_noise_with_each_gradients_std_to_every_encoder():
    splits, model, method, _ = method_setup("ogm_ge", {"alpha": 0.5}, hidden=128)
    inputs, labels = first_batch(splits)
    reference = joint_gradients(model, inputs, labels)
    step(method, model, inputs, labels)
    coefficients = method.last_coefficients
    assert min(coefficients.values()) < 1 and max(coefficients.values()) == 1
    checked = 0
    for name, p in model.named_parameters():
        if not name.startswith("encoders."):
            torch.testing.assert_close(p.grad, reference[name])
            continue
        noise = p.grad - coefficients[name.split(".")[1]] * reference[name]
        if noise.numel() >= 1000:
            assert noise.std() / reference[name].std() == pytest.approx(1.0, abs=0.06), name
            assert abs(float(noise.mean())) < 0.1 * float(reference[name].std()), name
            checked += 1
    assert checked == 4  # both layers of both encoders, the non-dominant encoder included


def test_ogm_options_are_checked():
    with pytest.raises(ConfigError, match="alpha"):
        method_setup("ogm", {"alpha": -1.0})
    with pytest.raises(ConfigError, match="modulation_end"):
        method_setup("ogm_ge", {"modulation_start": 5, "modulation_end": 2})
