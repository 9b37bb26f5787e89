"""MBSD: per-sample weights, the teacher's direction and the step's loss, against hand computations."""

from __future__ import annotations

import copy
import math
from itertools import combinations

import pytest
import torch
import torch.nn.functional as F

from erlmr.methods.mbsd import pair_terms
from support import first_batch, method_setup, setup_three, take_step

# Three samples, three classes, true class 0 for all: (both wrong), (a right, b wrong), (both right).
LABELS = torch.tensor([0, 0, 0])
LOGITS_A = torch.tensor([[0.0, 2.0, 0.0], [2.0, 0.0, 0.5], [1.0, 0.0, 0.0]])
LOGITS_B = torch.tensor([[0.0, 0.0, 3.0], [0.0, 1.0, 0.0], [3.0, 0.0, 1.0]])


def hand_pair(a: torch.Tensor, b: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """The KL and RS terms sample by sample in plain Python."""
    kl_total = rs_total = 0.0
    for logits_a, logits_b, y in zip(a.tolist(), b.tolist(), labels.tolist()):
        p_a, p_b = softmax(logits_a), softmax(logits_b)
        right = max(range(3), key=logits_a.__getitem__) == y or max(range(3), key=logits_b.__getitem__) == y
        weight = abs(p_a[y] - p_b[y]) if right else 0.0
        teacher, student = (p_a, p_b) if p_a[y] >= p_b[y] else (p_b, p_a)
        kl_total += weight * sum(t * math.log(t / s) for t, s in zip(teacher, student))
        rs_total += weight * sum((x - z) ** 2 for x, z in zip(logits_a, logits_b)) / 3
    return kl_total / len(labels), rs_total / len(labels)


def softmax(logits: list[float]) -> list[float]:
    exps = [math.exp(x) for x in logits]
    return [e / sum(exps) for e in exps]


def test_pair_terms_match_a_hand_computation_and_skip_samples_both_get_wrong():
    terms = pair_terms(LOGITS_A, LOGITS_B, LABELS)
    assert terms.weights[0] == 0  # both modalities wrong: no distillation
    p_a, p_b = LOGITS_A.softmax(1)[1:, 0], LOGITS_B.softmax(1)[1:, 0]
    torch.testing.assert_close(terms.weights[1:], (p_a - p_b).abs())
    kl, rs = hand_pair(LOGITS_A, LOGITS_B, LABELS)
    assert float(terms.kl) == pytest.approx(kl, rel=1e-5)
    assert float(terms.rs) == pytest.approx(rs, rel=1e-5)


def test_the_kl_term_moves_only_the_student_and_its_weights_are_constants():
    a, b = LOGITS_A.clone().requires_grad_(), LOGITS_B.clone().requires_grad_()
    grad_a, grad_b = torch.autograd.grad(pair_terms(a, b, LABELS).kl, (a, b))
    # Sample 1: a is the teacher (its true-class probability is larger), so only b is pulled;
    # sample 2: b is the teacher. A gradient through the weights would reach the teacher too.
    assert torch.all(grad_a[1] == 0) and grad_b[1].abs().sum() > 0
    assert torch.all(grad_b[2] == 0) and grad_a[2].abs().sum() > 0
    assert torch.all(grad_a[0] == 0) and torch.all(grad_b[0] == 0)
    # The student is pulled towards the teacher: its true-class logit rises.
    assert grad_b[1, 0] < 0


def plain_gradients(model, inputs, labels, distill: bool):
    """Gradients of CE(f) + Σ_m CE(ℓ_m) (+ the hand distillation terms over every pair) on a copy."""
    twin = copy.deepcopy(model)
    output = twin(inputs)
    logits = [output.modality_logits[m] for m in twin.modalities]
    loss = F.cross_entropy(output.logits, labels) + sum(F.cross_entropy(x, labels) for x in logits)
    if distill:
        pairs = [pair_terms(a, b, labels) for a, b in combinations(logits, 2)]
        loss = loss + sum(p.kl + p.rs for p in pairs) / len(pairs)
    loss.backward()
    return {name: p.grad for name, p in twin.named_parameters()}


@pytest.mark.parametrize("weights, distill", [({}, True), ({"kl_weight": 0.0, "rs_weight": 0.0}, False)])
def test_the_step_adds_the_pair_average_of_the_distillation_terms(weights, distill):
    splits, model, method = setup_three("mbsd", weights)
    inputs, labels = first_batch(splits)
    reference = plain_gradients(model, inputs, labels, distill)
    other = plain_gradients(model, inputs, labels, not distill)
    result = take_step(method, model, inputs, labels)
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, reference[name], msg=name)
    assert any(not torch.allclose(p.grad, other[n]) for n, p in model.named_parameters())
    assert "mbsd_kl" in result.logs


def test_outside_the_window_only_the_fused_cross_entropy_trains():
    splits, model, method, _ = method_setup("mbsd", {"modulation_end": 1})
    method.on_epoch_start(model, 2)
    inputs, labels = first_batch(splits)
    twin = copy.deepcopy(model)
    F.cross_entropy(twin(inputs).logits, labels).backward()
    result = take_step(method, model, inputs, labels)
    for (name, p), q in zip(model.named_parameters(), twin.parameters()):
        torch.testing.assert_close(p.grad, q.grad, msg=name)
    assert not result.logs
