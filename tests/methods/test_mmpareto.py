"""MMPareto: multimodal and unimodal gradients per encoder, min-norm weights on conflict."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from erlmr.methods.mmpareto import combine_gradients, pareto_weights
from erlmr.nn.pareto import min_norm_weights
from support import (
    first_batch,
    setup_three,
    take_step,
)


def test_mmpareto_uses_min_norm_weights_only_when_gradients_conflict():
    multimodal = torch.tensor([1.0, 0.0, 0.0])
    conflicting = torch.tensor([-0.5, 1.0, 0.0])
    weights, cosine = pareto_weights(multimodal, conflicting)
    assert cosine < 0
    torch.testing.assert_close(weights, min_norm_weights([multimodal, conflicting]))
    assert not torch.allclose(weights, torch.full((2,), 0.5))
    combined = weights[0] * multimodal + weights[1] * conflicting
    assert combined @ multimodal >= -1e-6 and combined @ conflicting >= -1e-6  # neither loss goes up

    agreeing = torch.tensor([1.0, 1.0, 0.0])
    weights, cosine = pareto_weights(multimodal, agreeing)
    assert cosine > 0
    torch.testing.assert_close(weights, torch.full((2,), 0.5))
    assert not torch.allclose(min_norm_weights([multimodal, agreeing]), weights)


def test_mmpareto_combination_keeps_at_least_the_plain_sum_magnitude():
    g_mm = [torch.tensor([2.0, 0.0]), torch.tensor([3.0]), torch.tensor([1.0])]
    g_u = [torch.tensor([0.0, 1.0]), torch.tensor([-1.0]), torch.tensor([-1.0])]
    weights = torch.tensor([0.1, 0.9])
    combined = combine_gradients(g_mm, g_u, weights, gamma=1.5)
    # 2(w₀g_mm + w₁g_u) is shorter than g_mm + g_u in the first two tensors: scaled up to its norm
    torch.testing.assert_close(combined[0], 1.5 * torch.tensor([0.4, 1.8]) * (5**0.5 / 3.4**0.5))
    torch.testing.assert_close(combined[1], 1.5 * torch.tensor([-0.8]) * 2.5)
    # ... and longer in the third (the plain sum is 0): only γ applies
    torch.testing.assert_close(combined[2], 1.5 * torch.tensor([-1.6]))


def test_mmpareto_step_takes_one_forward_and_sets_encoder_gradients():
    splits, model, method = setup_three("mmpareto")
    inputs, labels = first_batch(splits)
    calls = []
    handle = model.register_forward_hook(lambda *args: calls.append(1))
    result = take_step(method, model, inputs, labels)
    handle.remove()
    assert len(calls) == 1
    output = model(inputs)
    multimodal = F.cross_entropy(output.logits, labels)
    for m in splits.modalities:
        params = list(model.encoders[m].parameters())
        unimodal = F.cross_entropy(method.heads[m](output.features[m]), labels)
        g_mm = torch.autograd.grad(multimodal, params, retain_graph=True)
        g_u = torch.autograd.grad(unimodal, params, retain_graph=True)
        flat = [torch.cat([g.flatten() for g in grads]) for grads in (g_mm, g_u)]
        weights, cosine = pareto_weights(*flat)
        torch.testing.assert_close(result.logs[f"mmpareto_cosine_{m}"], cosine)
        for p, expected in zip(params, combine_gradients(g_mm, g_u, weights, 1.5)):
            torch.testing.assert_close(p.grad, expected)
    head_grad = torch.autograd.grad(multimodal, model.head.linear.weight)[0]
    torch.testing.assert_close(model.head.linear.weight.grad, head_grad)
