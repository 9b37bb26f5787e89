"""InfoReg: unimodal losses, a Fisher-trace window, and a proximal pull on the leading modality's encoder."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from erlmr.methods.inforeg import window_growth
from erlmr.training.step import method_step
from support import first_batch, method_setup, step, step_context, true_class_sums


def loss_gradients(model, inputs, labels):
    """Every parameter's gradient of CE(fused) + Σ_m CE(logits_m) on a copy of ``model``."""
    twin = copy.deepcopy(model)
    output = twin(inputs)
    loss = F.cross_entropy(output.logits, labels) + sum(
        F.cross_entropy(x, labels) for x in output.modality_logits.values()
    )
    loss.backward()
    return {name: p.grad for name, p in twin.named_parameters()}


def test_window_growth_pads_the_history_with_zeros_as_the_official_code():
    padded = torch.zeros(1, 11, dtype=torch.float64)
    assert float(window_growth(torch.cat([padded[:, 1:], torch.tensor([[3.0]])], 1))) == 1.0  # k(1) = 1
    second = torch.cat([padded[:, 2:], torch.tensor([[3.0, 1.0]], dtype=torch.float64)], 1)
    assert float(window_growth(second)) == pytest.approx(1.0 / 4.0)  # k(2) = F1 / (F0 + F1)
    constant = torch.full((1, 11), 2.0, dtype=torch.float64)
    assert float(window_growth(constant)) == 0.0  # 12 epochs of the same trace: closed at τ = 0.05
    growing = 1.1 ** torch.arange(11, dtype=torch.float64)[None]
    assert float(window_growth(growing)) == pytest.approx((1.1**10 - 1) / (1.1 ** torch.arange(1, 11.0)).sum().item())
    assert float(window_growth(growing)) > 0.05
    assert window_growth(torch.zeros(2, 11)).isneginf().all()  # no information at all: closed


def test_leading_modality_is_pulled_towards_its_epoch_start_weights():
    splits, model, method, _ = method_setup("inforeg")
    inputs, labels = first_batch(splits)
    torch.manual_seed(1)
    offsets = [torch.randn_like(a) * 0.1 for a in method.anchors]
    for anchor, offset in zip(method.anchors, offsets):
        anchor -= offset  # θ − θ̄ = offset
    reference = loss_gradients(model, inputs, labels)
    result = step(method, model, inputs, labels)
    scores = true_class_sums(result.output, splits.modalities, labels).detach()
    lead, behind = (0, 1) if scores[0] > scores[1] else (1, 0)
    beta = 0.95 * math.exp(math.tanh(float(scores[lead] - scores[behind])))
    assert method.strengths[lead] == pytest.approx(beta) and method.strengths[behind] == 0
    leader = splits.modalities[lead]
    assert float(result.logs[f"inforeg_strength_{leader}"]) == pytest.approx(beta)
    encoder = model.encoders[leader]
    pulled = dict(
        zip([n for n, _ in encoder.named_parameters()], offsets[lead].split([p.numel() for p in encoder.parameters()]))
    )
    for name, p in model.named_parameters():
        parts = name.split(".")
        expected = reference[name]
        if parts[:2] == ["encoders", leader]:
            expected = expected + beta * pulled[".".join(parts[2:])].view_as(p)
        torch.testing.assert_close(p.grad, expected, msg=name)


def test_the_trace_is_measured_before_the_proximal_term():
    splits, model, method, _ = method_setup("inforeg")
    inputs, labels = first_batch(splits)
    for anchor in method.anchors:
        anchor -= 1.0  # a large pull, which would dominate a trace measured afterwards
    reference = loss_gradients(model, inputs, labels)
    step(method, model, inputs, labels)
    for i, m in enumerate(splits.modalities):
        weights = [n for n, p in model.named_parameters() if n.startswith(f"encoders.{m}.") and p.dim() >= 2]
        expected = sum(float(reference[n].double().pow(2).mean()) for n in weights)
        assert float(method.epoch_trace[i]) == pytest.approx(expected)
    logs = method.on_epoch_end(model, 0)
    assert (
        logs["inforeg_trace_m0"] == pytest.approx(float(method.trace_history[0, -1])) and method.epoch_trace.eq(0).all()
    )


def test_no_pull_once_the_window_has_closed():
    splits, model, method, _ = method_setup("inforeg")
    method.trace_history.fill_(2.0)  # a flat trace: k = 0
    method.on_epoch_start(model, 12)
    for anchor in method.anchors:
        anchor -= 0.5
    inputs, labels = first_batch(splits)
    reference = loss_gradients(model, inputs, labels)
    result = step(method, model, inputs, labels)
    assert method.strengths.tolist() == [0.0, 0.0] and float(result.logs["inforeg_window_m0"]) == 0.0
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, reference[name], msg=name)


def drift_after_one_epoch(strength: float) -> float:
    """‖θ_0 − θ̄_0‖ of the leading encoder after one epoch of SGD (lr 0.5) from the same start."""
    splits, model, method, _ = method_setup("inforeg", {"strength": strength})
    optimizer = torch.optim.SGD([*model.parameters()], lr=0.5)
    method.on_epoch_start(model, 0)
    start = method.anchors[0].clone()
    for index in range(4):
        inputs, labels = splits.train.__getitems__(range(16 * index, 16 * index + 16))
        context = step_context(method, model, optimizer, index=index, steps_per_epoch=4)
        method_step(method, model, inputs, labels, context)
        context.finish()
    return float((method.flat_encoder(model, "m0") - start).norm())


def test_regulation_slows_the_leading_encoder_end_to_end():
    free, regulated = drift_after_one_epoch(0.0), drift_after_one_epoch(0.95)
    assert regulated < 0.9 * free
