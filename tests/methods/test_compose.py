"""Composition: a step method followed by gradient modulators (``erlmr+ogm``), and what cannot follow a '+'."""

from __future__ import annotations

import copy

import pytest

from erlmr.errors import ConfigError
from erlmr.methods import build_method
from support import (
    assert_encoder_scaling,
    expected_ogm_coefficients,
    first_batch,
    method_setup,
    step,
    take_step,
    true_class_sums,
)


def test_erlmr_plus_ogm_scales_erlmrs_gradient_by_the_coefficient():
    alpha = 0.5
    splits, model, composed, context = method_setup("erlmr+ogm", {"ogm": {"alpha": alpha}}, euler=True)
    twin = copy.deepcopy(model)
    plain = build_method("erlmr", {}, twin, context)
    inputs, labels = first_batch(splits)
    take_step(plain, twin, inputs, labels)
    reference = {name: p.grad for name, p in twin.named_parameters()}
    result = step(composed, model, inputs, labels)
    expected = expected_ogm_coefficients(true_class_sums(result.output, splits.modalities, labels), alpha)
    assert expected.min() < 0.99
    coefficients = dict(zip(splits.modalities, expected.tolist()))
    assert composed.parts[1].last_coefficients == pytest.approx(coefficients)
    assert_encoder_scaling(model, reference, coefficients)


def test_a_method_that_does_not_modulate_gradients_cannot_follow_a_plus():
    with pytest.raises(ConfigError, match=r"cannot compose 'erlmr\+pmr'.*\['pmr'\].*ogm, ogm_ge"):
        method_setup("erlmr+pmr", euler=True)
