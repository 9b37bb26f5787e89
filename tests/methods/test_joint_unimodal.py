"""joint_unimodal: fused CE plus every modality's own CE, against a longhand computation."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from support import first_batch, setup_three, take_step


def test_loss_is_the_weighted_sum_of_fused_and_per_modality_cross_entropies():
    splits, model, method = setup_three("joint_unimodal", {"fusion_weight": 0.5, "modality_weight": 2.0})
    inputs, labels = first_batch(splits)
    output = model(inputs)
    by_hand = 0.5 * F.cross_entropy(output.logits, labels) + 2.0 * sum(
        F.cross_entropy(output.modality_logits[m], labels) for m in splits.modalities
    )
    torch.testing.assert_close(method.loss(output, labels), by_hand)


def test_its_gradient_is_that_of_the_longhand_loss_and_differs_from_joint():
    splits, model, method = setup_three("joint_unimodal")
    inputs, labels = first_batch(splits)
    take_step(method, model, inputs, labels)
    got = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    output = model(inputs)
    (
        F.cross_entropy(output.logits, labels)
        + sum(F.cross_entropy(output.modality_logits[m], labels) for m in splits.modalities)
    ).backward()
    for p, g in zip(model.parameters(), got):
        torch.testing.assert_close(g, p.grad)
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(inputs).logits, labels).backward()
    assert not all(torch.allclose(g, p.grad) for p, g in zip(model.parameters(), got))
    assert not method.uses_euler
