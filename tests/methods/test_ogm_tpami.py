"""ogm_tpami: OGM-GE with the journal's warm-up and α; OGM+ boosts the weak modality instead."""

from __future__ import annotations

import pytest
import torch

from support import (
    assert_encoder_scaling,
    expected_ogm_coefficients,
    first_batch,
    joint_gradients,
    method_setup,
    step,
    true_class_sums,
)


def test_ogm_tpami_defaults_are_the_released_ones():
    _, _, method, _ = method_setup("ogm_tpami")
    o = method.options
    assert (o.alpha, o.modulation_start, o.modulation_end, o.noise, o.boost_weak) == (0.8, 6, 60, True, False)


@pytest.mark.parametrize("strengths", [(2.5, 0.8), (2.5, 1.0, 0.8)])
def test_ogm_tpami_leaves_epoch_5_alone_and_shrinks_the_dominant_encoder_from_epoch_6(strengths):
    splits, model, method, _ = method_setup("ogm_tpami", {"noise": False}, strengths)
    inputs, labels = first_batch(splits)
    reference = joint_gradients(model, inputs, labels)
    method.on_epoch_start(model, 5)  # the last warm-up epoch (official: warm_up = 1 while epoch <= 5)
    step(method, model, inputs, labels)
    assert_encoder_scaling(model, reference, dict.fromkeys(splits.modalities, 1.0))

    model.zero_grad()
    method.on_epoch_start(model, 6)
    result = step(method, model, inputs, labels)
    expected = expected_ogm_coefficients(true_class_sums(result.output, splits.modalities, labels), 0.8)
    assert expected.min() < 0.9 and (expected == 1).any()
    coefficients = dict(zip(splits.modalities, expected.tolist()))
    assert method.last_coefficients == pytest.approx(coefficients)
    assert_encoder_scaling(model, reference, coefficients)


def test_ogm_plus_multiplies_the_weak_modalities_by_four_and_leaves_the_dominant_one():
    splits, model, method, _ = method_setup("ogm_tpami", {"noise": False, "boost_weak": True, "modulation_start": 0})
    inputs, labels = first_batch(splits)
    reference = joint_gradients(model, inputs, labels)
    result = step(method, model, inputs, labels)
    scores = true_class_sums(result.output, splits.modalities, labels)
    weak, strong = splits.modalities[int(scores.argmin())], splits.modalities[int(scores.argmax())]
    assert method.last_coefficients == {weak: 4.0, strong: 1.0}
    assert_encoder_scaling(model, reference, {weak: 4.0, strong: 1.0})


def test_ogm_tpami_adds_the_ge_noise_by_default():
    splits, model, method, _ = method_setup("ogm_tpami", {"modulation_start": 0})
    inputs, labels = first_batch(splits)
    reference = joint_gradients(model, inputs, labels)
    step(method, model, inputs, labels)
    k = method.last_coefficients
    for name, p in model.named_parameters():
        if name.startswith("encoders."):
            assert not torch.allclose(p.grad, k[name.split(".")[1]] * reference[name]), name
        else:
            torch.testing.assert_close(p.grad, reference[name])
