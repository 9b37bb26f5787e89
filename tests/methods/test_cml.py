"""CML: the ranking penalty on hand-made confidences, the per-sample removal orders, and the step's loss."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from erlmr.methods.cml import level_logits, ranking_penalty, removal_masks
from support import first_batch, setup_three, take_step


def logits_with(confidences: list[float], true_class_first: list[bool]) -> torch.Tensor:
    """Two-class logits whose max probability is each confidence, on class 0 or class 1."""
    rows = [
        [math.log(c), math.log(1 - c)] if first else [math.log(1 - c), math.log(c)]
        for c, first in zip(confidences, true_class_first)
    ]
    return torch.tensor(rows, requires_grad=True)


# Samples (label 0): full right 0.6 → reduced 0.9 (rises: penalised); full right 0.9 → reduced 0.6
# (falls: fine); both wrong 0.6 → 0.8 (rises: only the reduced side is pushed).
LABELS = torch.tensor([0, 0, 0])


def test_penalty_is_the_confidence_rise_where_it_is_not_allowed():
    full = logits_with([0.6, 0.9, 0.6], [True, True, False])
    reduced = logits_with([0.9, 0.6, 0.8], [True, True, False])
    penalty = ranking_penalty([full, reduced], LABELS, margin=0.0)
    torch.testing.assert_close(penalty, torch.tensor([0.3, 0.0, 0.2]))
    grad_full, grad_reduced = torch.autograd.grad(penalty.sum(), (full, reduced))
    # Sample 0: the reduced input's confidence is pushed down and the full input's up.
    assert grad_reduced[0, 0] > 0 and grad_full[0, 0] < 0
    assert torch.all(grad_full[1] == 0) and torch.all(grad_reduced[1] == 0)
    # Sample 2: both wrong, the fuller level is a constant; the reduced one's (wrong) confidence falls.
    assert torch.all(grad_full[2] == 0) and grad_reduced[2, 1] > 0


def test_the_margin_tolerates_small_rises():
    full = logits_with([0.6, 0.6], [True, False])
    reduced = logits_with([0.65, 0.7], [True, False])
    torch.testing.assert_close(ranking_penalty([full, reduced], LABELS[:2], margin=0.08), torch.tensor([0.0, 0.02]))


def test_every_sample_removes_its_own_random_order_one_modality_per_level():
    torch.manual_seed(0)
    keep = removal_masks(64, 3, torch.device("cpu"))
    assert keep.shape == (3, 64, 3)
    assert torch.all(keep[0] == 1)
    torch.testing.assert_close(keep.sum(2), torch.tensor([3.0, 2.0, 1.0]).view(3, 1).expand(3, 64))
    assert torch.all(keep[2] <= keep[1])  # a removed modality stays removed
    first_removed = (1 - keep[1]).argmax(1)
    assert len(set(first_removed.tolist())) == 3  # samples do not share one order


def test_level_logits_equal_the_model_with_those_modalities_absent():
    splits, model, _ = setup_three("cml")
    inputs, _ = first_batch(splits, 4)
    output = model(inputs)
    keep = torch.ones(3, 4, 3)
    keep[1, :, 1] = 0
    keep[2, :, 0] = keep[2, :, 1] = 0
    features = [output.features[m] for m in model.modalities]
    one, two = level_logits(model.head, features, keep)
    torch.testing.assert_close(one, model(inputs, absent=["m1"]).logits)
    torch.testing.assert_close(two, model(inputs, absent=["m0", "m1"]).logits)


def hand_loss(model, inputs, labels, rank_weight: float) -> torch.Tensor:
    """The CML loss built from ``model(inputs, absent=...)`` sample by sample, on a copy of the model."""
    keep = removal_masks(len(labels), 3, labels.device)
    levels = []
    for k in range(3):
        rows = []
        for i in range(len(labels)):
            sample = {m: x[i : i + 1] for m, x in inputs.items()}
            absent = [m for j, m in enumerate(model.modalities) if keep[k, i, j] == 0]
            rows.append(model(sample, absent=absent).logits)
        levels.append(torch.cat(rows))
    classification = sum(F.cross_entropy(g, labels) for g in levels) / 3
    return classification + rank_weight * ranking_penalty(levels, labels, 0.0).sum()


@pytest.mark.parametrize("rank_weight", [0.1, 0.0])
def test_the_step_is_the_mean_level_cross_entropy_plus_the_weighted_penalty(rank_weight):
    splits, model, method = setup_three("cml", {"rank_weight": rank_weight})
    inputs, labels = first_batch(splits, 16)
    twin = copy.deepcopy(model)
    torch.manual_seed(3)
    hand = hand_loss(twin, inputs, labels, rank_weight)
    hand.backward()
    torch.manual_seed(3)
    result = take_step(method, model, inputs, labels)
    assert float(result.loss) == pytest.approx(float(hand.detach()), rel=1e-5)
    for (name, p), q in zip(model.named_parameters(), twin.parameters()):
        torch.testing.assert_close(p.grad, q.grad, msg=name)
    if rank_weight:  # the penalty is active on this batch: the step is not plain level cross-entropy
        assert float(result.logs["cml_rank"]) > 0
