"""UME: the modalities train independently, and the prediction is the mean of their own heads' logits."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from erlmr.errors import ConfigError
from support import first_batch, setup_three, step_context, take_step


def head_logits(method, model, inputs, modality):
    index = model.modalities.index(modality)
    return method.heads[index](model.encoders[modality](inputs[modality]))


def test_each_encoder_learns_from_its_own_modality_alone():
    splits, model, method = setup_three("ume")
    inputs, labels = first_batch(splits)
    take_step(method, model, inputs, labels)
    reference = {n: p.grad.clone() for n, p in model.encoders.named_parameters()}
    model.zero_grad(set_to_none=True)
    method.zero_grad(set_to_none=True)
    noisy = {**inputs, "m1": torch.randn_like(inputs["m1"])}
    take_step(method, model, noisy, labels)
    for name, p in model.encoders.named_parameters():
        if name.startswith("m1."):
            assert not torch.allclose(p.grad, reference[name])
        else:  # another modality's input does not reach this encoder's gradient
            torch.testing.assert_close(p.grad, reference[name], msg=name)
    assert all(p.grad is None for p in model.head.parameters())  # the fusion head is not trained


def test_the_gradient_is_each_modality_cross_entropy_through_its_own_head():
    splits, model, method = setup_three("ume")
    inputs, labels = first_batch(splits)
    twin_model, twin_method = copy.deepcopy(model), copy.deepcopy(method)
    for m in model.modalities:
        F.cross_entropy(head_logits(twin_method, twin_model, inputs, m), labels).backward()
    take_step(method, model, inputs, labels)
    for (name, p), q in zip(method.named_parameters(), twin_method.parameters()):
        torch.testing.assert_close(p.grad, q.grad, msg=name)
    for (name, p), q in zip(model.encoders.named_parameters(), twin_model.encoders.parameters()):
        torch.testing.assert_close(p.grad, q.grad, msg=name)


def test_predict_is_the_mean_of_the_present_modalities_logits():
    splits, model, method = setup_three("ume")
    inputs, _ = first_batch(splits, 8)
    with torch.no_grad():
        logits = {m: head_logits(method, model, inputs, m) for m in model.modalities}
        full = method.predict(model, inputs)
        without_m1 = method.predict(model, inputs, absent=["m1"])
    torch.testing.assert_close(full.logits, torch.stack(list(logits.values())).mean(0))
    torch.testing.assert_close(without_m1.logits, (logits["m0"] + logits["m2"]) / 2)
    assert set(without_m1.modality_logits) == {"m0", "m2"}
    torch.testing.assert_close(full.modality_logits["m1"], logits["m1"])


def test_clipping_the_classifiers_together_is_refused():
    splits, model, method = setup_three("ume")
    inputs, labels = first_batch(splits, 8)
    step = step_context(method, model)
    step.grad_clip = 1.0
    with pytest.raises(ConfigError, match="ume.*grad_clip=0"):
        method.training_step(model, inputs, labels, step)
