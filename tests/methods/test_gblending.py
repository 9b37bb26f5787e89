"""G-Blending: loss weights from generalisation over overfitting, measured on validation only."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from erlmr.methods.gblending import LossSnapshot, blend_weights, head_losses
from support import (
    first_batch,
    setup_three,
    take_step,
)


def test_gblend_weights_are_generalisation_over_overfitting_squared():
    start = LossSnapshot(train=torch.tensor([1.0, 1.0, 1.0]), val=torch.tensor([1.2, 1.2, 1.2]))
    # fused: ΔG 0.4, ΔO 0.1 → 40; m0: ΔG 0.4, ΔO 0.4 → 2.5; m1: val loss rose → 0
    end = LossSnapshot(train=torch.tensor([0.5, 0.2, 0.9]), val=torch.tensor([0.8, 0.8, 1.3]))
    weights = blend_weights(start, end, overfit_floor=1e-3)
    expected = torch.tensor([40.0, 2.5, 0.0])
    torch.testing.assert_close(weights, expected / expected.sum())
    assert weights[0] > weights[1] > weights[2] == 0
    assert blend_weights(start, LossSnapshot(start.train, start.val + 0.1), 1e-3) is None


def test_gblend_loss_is_the_weighted_sum_of_head_losses():
    splits, model, method = setup_three("gblending")
    inputs, labels = first_batch(splits)
    output = model(inputs)
    method.weights = torch.tensor([0.0, 1.0, 0.0, 0.0])
    torch.testing.assert_close(method.loss(output, labels), F.cross_entropy(output.modality_logits["m0"], labels))
    method.weights = torch.tensor([0.7, 0.1, 0.1, 0.1])
    expected = 0.7 * F.cross_entropy(output.logits, labels) + sum(
        0.1 * F.cross_entropy(output.modality_logits[m], labels) for m in splits.modalities
    )
    torch.testing.assert_close(method.loss(output, labels), expected)


class Untouchable:
    def __getattr__(self, name):
        raise AssertionError("G-Blending read the test split")

    def __len__(self):
        raise AssertionError("G-Blending read the test split")


def test_gblend_estimates_weights_on_val_and_never_reads_test():
    splits, model, method = setup_three("gblending", {"super_epoch": 1})
    splits.test = Untouchable()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.2)
    method.on_epoch_start(model, 0)
    for inputs, labels in splits.train.batches(32):
        optimizer.zero_grad()
        take_step(method, model, inputs, labels, optimizer)
        optimizer.step()
    logs = method.on_epoch_end(model, 0)
    train_loss, val_loss = method.snapshot
    torch.testing.assert_close(val_loss, head_losses(model, splits.val, 32, torch.device("cpu")))
    torch.testing.assert_close(train_loss, head_losses(model, splits.train, 32, torch.device("cpu")))
    assert not torch.allclose(method.weights, torch.full((4,), 0.25))
    assert abs(sum(logs.values()) - 1) < 1e-5 and set(logs) == {
        "gblend_weight_fused",
        "gblend_weight_m0",
        "gblend_weight_m1",
        "gblend_weight_m2",
    }
