"""UMT: teachers train alone first, then stay frozen while their features are distilled into the encoders."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
import torch.nn.functional as F

from erlmr.errors import ConfigError
from erlmr.methods import build_method
from erlmr.training.step import method_step
from support import context_for, first_batch, setup_three, step_context


def run_step(method, model, inputs, labels, epoch: int, lr: float = 0.0, index: int = 0, steps: int = 1):
    """One step at ``epoch`` with an SGD of rate ``lr``, short of the update (``step.finish()`` takes it)."""
    method.on_epoch_start(model, epoch)
    params = [*model.parameters(), *method.parameters()]
    step = step_context(method, model, torch.optim.SGD(params, lr=lr), index=index, steps_per_epoch=steps)
    return method_step(method, model, inputs, labels, step), step


def perturbed_teachers(method):
    """Teachers that differ from the student (a fresh copy of an encoder equals the student's)."""
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in method.teachers.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=generator))


def test_teacher_phase_trains_each_teacher_on_its_own_cross_entropy_and_not_the_model():
    splits, model, method = setup_three("umt", {"teacher_epochs": 1})
    inputs, labels = first_batch(splits)
    twin = copy.deepcopy(method)
    for m in model.modalities:
        F.cross_entropy(twin.teachers[m](inputs[m])[1], labels).backward()
    before, teachers = copy.deepcopy(model.state_dict()), copy.deepcopy(method.teachers.state_dict())
    result, step = run_step(method, model, inputs, labels, epoch=0, lr=0.5)
    assert float(result.logs["umt_teaching"]) == 1
    for (name, p), q in zip(method.named_parameters(), twin.parameters()):
        torch.testing.assert_close(p.grad, q.grad, msg=name)
    assert all(p.grad is None for p in model.parameters())
    step.finish()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not all(torch.equal(teachers[k], v) for k, v in method.teachers.state_dict().items())


@pytest.mark.parametrize("weight", [10.0, 0.0])
def test_student_phase_adds_the_feature_distillation_gradient_and_leaves_teachers_alone(weight):
    splits, model, method = setup_three("umt", {"teacher_epochs": 1, "distill_weight": weight})
    perturbed_teachers(method)
    inputs, labels = first_batch(splits)
    teachers = copy.deepcopy(method.teachers.state_dict())
    twin = copy.deepcopy(model)
    output = twin(inputs)
    with torch.no_grad():
        targets = {m: method.teachers[m].encoder(inputs[m]) for m in model.modalities}
    distill = sum(((output.encoded[m] - targets[m]) ** 2).mean() for m in model.modalities)
    (F.cross_entropy(output.logits, labels) + weight * distill).backward()
    plain = copy.deepcopy(model)
    F.cross_entropy(plain(inputs).logits, labels).backward()

    result, _ = run_step(method, model, inputs, labels, epoch=1)
    assert float(result.logs["umt_teaching"]) == 0
    for (name, p), q in zip(model.named_parameters(), twin.parameters()):
        torch.testing.assert_close(p.grad, q.grad, msg=name)
    differs = [
        not torch.allclose(p.grad, r.grad)
        for (n, p), r in zip(model.encoders.named_parameters(), plain.encoders.parameters())
    ]
    assert any(differs) == (weight > 0)
    run_step(method, model, inputs, labels, epoch=1, lr=0.5)[1].finish()  # an update: the teachers stay frozen
    assert all(torch.equal(teachers[k], v) for k, v in method.teachers.state_dict().items())
    assert not method.teachers.training


def test_the_teacher_phase_is_half_the_run_by_default_and_a_one_epoch_run_has_none():
    splits, model, _ = setup_three("umt", {"teacher_epochs": 1})
    context = context_for(splits, 32)
    inputs, labels = first_batch(splits, 16)
    method = build_method("umt", {}, model, dataclasses.replace(context, epochs=5))
    assert [float(run_step(method, model, inputs, labels, e)[0].logs["umt_teaching"]) for e in range(5)] == [
        1,
        1,
        0,
        0,
        0,
    ]
    one_epoch = build_method("umt", {}, model, dataclasses.replace(context, epochs=1))
    model.zero_grad(set_to_none=True)
    result, _ = run_step(one_epoch, model, inputs, labels, 0)
    assert float(result.logs["umt_teaching"]) == 0 and "umt_distill" not in result.logs
    twin = copy.deepcopy(model)
    F.cross_entropy(twin(inputs).logits, labels).backward()  # plain joint training
    for (name, p), q in zip(model.named_parameters(), twin.parameters()):
        torch.testing.assert_close(p.grad, q.grad, msg=name)


def test_a_teacher_phase_as_long_as_the_run_is_refused():
    splits, model, _ = setup_three("umt", {"teacher_epochs": 1})
    with pytest.raises(ConfigError, match="teacher_epochs=2.*2-epoch run"):
        build_method("umt", {"teacher_epochs": 2}, model, dataclasses.replace(context_for(splits, 32), epochs=2))


def test_clipping_the_teachers_together_is_refused():
    splits, model, method = setup_three("umt", {"teacher_epochs": 1})
    inputs, labels = first_batch(splits, 8)
    step = step_context(method, model)
    step.grad_clip = 1.0
    with pytest.raises(ConfigError, match="grad_clip"):
        method_step(method, model, inputs, labels, step)
