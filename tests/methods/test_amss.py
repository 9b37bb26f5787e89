"""AMSS: each encoder weight tensor updates only ⌈n·c_m⌉ units drawn by gradient importance."""

from __future__ import annotations

import math

import pytest
import torch

from erlmr.errors import ConfigError
from erlmr.methods.amss import AMSSOptions, keep_ratios, label_entropy
from support import first_batch, joint_gradients, method_setup, step


def official_two_modality_ratios(scores, entropies, label_entropy_value, temperature, offset=0.5):
    """The audio-visual code's formula, written out: c_a = e^{t_v}/(e^{t_a} + e^{t_v}), clamped."""
    t = [(s + label_entropy_value + offset) / h / temperature for s, h in zip(scores, entropies)]
    c_a = math.exp(t[1]) / (math.exp(t[0]) + math.exp(t[1]))
    return [min(max(c, 0.1), 0.9) for c in (c_a, 1 - c_a)]


def test_keep_ratios_follow_the_official_formula_and_the_stronger_modality_keeps_fewer():
    options = AMSSOptions(temperature=0.5)
    scores, entropies = torch.tensor([-0.4, -1.2]), torch.tensor([2.0, 2.1])
    keep = keep_ratios(scores, entropies, torch.tensor(1.3), options)
    assert keep.tolist() == pytest.approx(official_two_modality_ratios(scores.tolist(), entropies.tolist(), 1.3, 0.5))
    assert keep[0] < keep[1]  # modality 0 has the lower CE: it updates fewer units
    three = keep_ratios(torch.tensor([-0.4, -1.2, -0.8]), torch.tensor([2.0, 2.1, 2.0]), torch.tensor(1.3), options)
    rates = (torch.tensor([-0.4, -1.2, -0.8]) + 1.3 + 0.5) / torch.tensor([2.0, 2.1, 2.0])
    torch.testing.assert_close(three, (1 - torch.softmax(rates / 0.5, 0)).clamp(0.1, 0.9))
    fallback = keep_ratios(torch.tensor([-0.4, -3.0]), entropies, torch.tensor(1.3), options)
    assert fallback.tolist() == [0.5, 0.5]  # −3 + 1.3 + 0.5 <= 0


def test_label_entropy_is_the_entropy_of_the_batch_histogram():
    labels = torch.tensor([0, 0, 1, 2])
    assert float(label_entropy(labels, 5)) == pytest.approx(-(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25)))


@pytest.mark.parametrize("strengths", [(2.5, 0.8), (2.5, 1.0, 0.8)])
def test_each_encoder_tensor_keeps_exactly_its_share_of_rows(strengths):
    splits, model, method, _ = method_setup("amss", strengths=strengths)
    inputs, labels = first_batch(splits)
    reference = joint_gradients(model, inputs, labels)
    result = step(method, model, inputs, labels)
    keep = method.last_coefficients
    assert float(result.logs["amss_coefficient_m0"]) == pytest.approx(keep["m0"])
    assert len(set(keep.values())) > 1 and all(0.1 <= c <= 0.9 for c in keep.values())
    for name, p in model.named_parameters():
        if not name.startswith("encoders.") or p.dim() < 2:
            torch.testing.assert_close(p.grad, reference[name], msg=name)  # head and biases untouched
            continue
        kept = p.grad.abs().sum(1) > 0
        assert int(kept.sum()) == math.ceil(len(kept) * keep[name.split(".")[1]]), name
        torch.testing.assert_close(p.grad[kept], reference[name][kept])  # kept rows are not rescaled


def test_units_are_drawn_by_importance_and_never_without_gradient():
    _, _, method, _ = method_setup("amss")
    importance = torch.tensor([0.0, 5.0, 0.0, 1.0, 0.0, 0.01, 2.0, 0.0])
    counts = torch.zeros(8)
    for _ in range(400):
        weights = method.unit_weights(importance, 2)
        assert set(weights.unique().tolist()) <= {0.0, 1.0} and weights.sum() == 2
        counts += weights
    assert counts[importance == 0].sum() == 0
    assert counts[1] > counts[6] > counts[3] > counts[5]
    assert method.unit_weights(torch.tensor([0.0, 3.0, 0.0, 1.0]), 3).tolist() == [0.0, 1.0, 0.0, 1.0]


def test_the_draws_come_from_the_methods_own_generator_and_resume():
    _, _, method, _ = method_setup("amss")
    importance = torch.rand(64) + 0.1
    saved = method.get_extra_state()
    global_state = torch.get_rng_state()
    first = [method.unit_weights(importance, 20) for _ in range(3)]
    assert torch.equal(torch.get_rng_state(), global_state)
    method.set_extra_state(saved)
    assert all(torch.equal(a, method.unit_weights(importance, 20)) for a in first)


def test_amss_options_are_checked():
    with pytest.raises(ConfigError, match="min_keep must be <= max_keep"):
        method_setup("amss", {"min_keep": 0.8, "max_keep": 0.5})
    with pytest.raises(ConfigError, match="importance"):
        method_setup("amss", {"importance": "fisher"})
