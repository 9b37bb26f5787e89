"""CGGM: classifier accuracy gains set the encoder gradient scales; a cosine term pulls the fused output layer."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from erlmr.errors import ConfigError
from erlmr.methods.cggm import balance_coefficients
from support import first_batch, joint_gradients, method_setup, step


def test_balance_coefficients_favour_the_modality_that_improved_least():
    balance, guarded = balance_coefficients(torch.tensor([0.6, 0.2]), 1e-3)
    assert not guarded and balance.tolist() == pytest.approx([0.25, 0.75])
    balance, _ = balance_coefficients(torch.tensor([0.3, 0.1, 0.2]), 1e-3)
    assert balance.tolist() == pytest.approx([0.5, 5 / 6, 2 / 3]) and float(balance.sum()) == pytest.approx(2)


def test_the_guard_stops_the_coefficients_exploding_when_the_gains_cancel():
    exploded, guarded = balance_coefficients(torch.tensor([0.02, -0.0199]), 0.0)  # the official formula
    assert not guarded and exploded[0] < -150 and exploded[1] > 150
    balance, guarded = balance_coefficients(torch.tensor([0.02, -0.0199]), 1e-3)
    assert guarded and balance.tolist() == [1.0, 1.0]


def expected_step(method, model, inputs, labels):
    """Accuracies of the classifiers before their update and the resulting B from the stored previous ones."""
    classifiers = copy.deepcopy(method.classifiers)
    features = model(inputs).features
    accuracy = torch.stack([(classifiers[m](features[m]).argmax(1) == labels).float().mean() for m in classifiers])
    improvement = accuracy - method.previous_accuracy
    total = improvement.sum() + 1e-8
    return accuracy, (total - improvement) / total, classifiers


def direction_gradient(model, classifiers, balance):
    fused = model.head.linear.weight.detach().clone().requires_grad_()
    cosines = torch.stack(
        [F.cosine_similarity(c[-1].weight.detach().flatten(), fused.flatten(), dim=0) for c in classifiers.values()]
    )
    loss = (balance.abs().sum() - (balance * cosines).sum()) / len(cosines)
    return torch.autograd.grad(loss, fused)[0]


@pytest.mark.parametrize("strengths", [(2.5, 0.8), (2.5, 1.0, 0.8)])
def test_encoder_gradients_are_scaled_by_rho_b_and_the_head_gets_the_direction_term(strengths):
    rho, lam = 1.3, 0.2
    splits, model, method, _ = method_setup("cggm", {"clip_norm": 0.0, "rho": rho, "lam": lam}, strengths)
    inputs, labels = first_batch(splits)
    reference = joint_gradients(model, inputs, labels)
    method.previous_accuracy[0] = 0.1  # as if modality 0's classifier had been right on 10 % last step
    accuracy, balance, classifiers = expected_step(method, model, inputs, labels)
    result = step(method, model, inputs, labels)
    assert float(result.logs["cggm_guard"]) == 0.0
    scales = dict(zip(splits.modalities, (rho * balance).tolist()))
    assert method.last_coefficients == pytest.approx(scales)
    assert len({round(s, 6) for s in scales.values()}) > 1
    torch.testing.assert_close(method.previous_accuracy, accuracy)
    extra = lam * direction_gradient(model, classifiers, balance)
    assert extra.abs().max() > 1e-4
    for name, p in model.named_parameters():
        if name.startswith("encoders."):
            torch.testing.assert_close(p.grad, reference[name] * scales[name.split(".")[1]], msg=name)
        elif name == "head.linear.weight":
            torch.testing.assert_close(p.grad, reference[name] + extra)
        else:
            torch.testing.assert_close(p.grad, reference[name], msg=name)
    features = {m: x.detach() for m, x in model(inputs).features.items()}
    classifier_loss = sum(F.cross_entropy(c(features[m]), labels) for m, c in classifiers.items())
    expected = torch.autograd.grad(classifier_loss, list(classifiers.parameters()))
    for g, p in zip(expected, method.classifiers.parameters()):
        torch.testing.assert_close(p.grad, g)  # for the run's optimiser to apply


def test_no_improvement_means_no_modulation():
    splits, model, method, _ = method_setup("cggm", {"clip_norm": 0.0, "lam": 0.0})
    inputs, labels = first_batch(splits)
    accuracy, _, _ = expected_step(method, model, inputs, labels)
    method.previous_accuracy.copy_(accuracy)  # Δ = 0 for every modality
    reference = joint_gradients(model, inputs, labels)
    result = step(method, model, inputs, labels)
    assert float(result.logs["cggm_guard"]) == 1.0 and set(method.last_coefficients.values()) == {1.0}
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, reference[name], msg=name)


def test_gradients_are_clipped_after_modulation():
    splits, model, method, _ = method_setup("cggm", {"clip_norm": 0.05})
    inputs, labels = first_batch(splits)
    reference = joint_gradients(model, inputs, labels)
    assert torch.cat([g.flatten() for g in reference.values()]).norm() > 0.1
    step(method, model, inputs, labels)
    norm = torch.cat([p.grad.flatten() for p in model.parameters()]).norm()
    assert float(norm) == pytest.approx(0.05, rel=1e-4)


def test_a_step_method_with_its_own_head_needs_lam_zero():
    splits, model, method, _ = method_setup("mmcosine+cggm")
    inputs, labels = first_batch(splits)
    with pytest.raises(ConfigError, match="set cggm's lam: 0"):
        step(method, model, inputs, labels)
    _, model, method, _ = method_setup("mmcosine+cggm", {"cggm": {"lam": 0.0}})
    step(method, model, inputs, labels)
