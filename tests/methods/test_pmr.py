"""PMR: prototypes are class means; the slow modality gets the prototype cross-entropy."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from support import (
    first_batch,
    joint_gradients,
    method_setup,
    step,
)


def test_pmr_prototypes_are_class_means_then_blend_with_momentum():
    splits, model, method, _ = method_setup("pmr", {"momentum": 0.25})
    inputs, labels = first_batch(splits)
    model.train()
    method.update_prototypes(model, [(inputs, labels)])
    assert model.training
    model.eval()
    with torch.no_grad():
        features = model(inputs).features
    first = {}
    for m, prototypes in zip(splits.modalities, method.prototypes):
        means = torch.stack([features[m][labels == c].mean(0) for c in range(splits.num_classes)])
        torch.testing.assert_close(prototypes, means)
        first[m] = means
    other_inputs, other_labels = splits.train.__getitems__(list(range(32, 64)))
    keep = other_labels != 0  # class 0 is missing from the second batch: its prototype must stay
    other_inputs = {m: x[keep] for m, x in other_inputs.items()}
    method.update_prototypes(model, [(other_inputs, other_labels[keep])])
    with torch.no_grad():
        features = model(other_inputs).features
    for m, prototypes in zip(splits.modalities, method.prototypes):
        torch.testing.assert_close(prototypes[0], first[m][0])
        for c in range(1, splits.num_classes):
            new = features[m][other_labels[keep] == c].mean(0)
            torch.testing.assert_close(prototypes[c], 0.75 * new + 0.25 * first[m][c])


@pytest.mark.parametrize("squared", [False, True])
def test_pmr_adds_prototype_cross_entropy_to_the_slow_modality_only(squared):
    alpha = 2.0
    splits, model, method, _ = method_setup("pmr", {"alpha": alpha, "squared_distance": squared})
    method.on_epoch_start(model, 0)  # prototypes from a stratified tenth of the training split
    assert [tuple(p.shape) for p in method.prototypes] == [(4, 16), (4, 16)]
    inputs, labels = first_batch(splits)
    reference = joint_gradients(model, inputs, labels)
    result = step(method, model, inputs, labels)
    features = result.output.features
    sims = [
        -(torch.cdist(features[m], p) ** (2 if squared else 1)) for m, p in zip(splits.modalities, method.prototypes)
    ]
    scores = torch.stack([s.softmax(1).gather(1, labels[:, None]).sum() for s in sims])
    slow = int(scores.argmin())
    expected = F.cross_entropy(result.output.logits, labels) + alpha * F.cross_entropy(sims[slow], labels)
    torch.testing.assert_close(result.loss, expected.detach())
    for name, p in model.named_parameters():
        if name.startswith(f"encoders.{splits.modalities[slow]}."):
            assert not torch.allclose(p.grad, reference[name]), f"{name} should get the prototype gradient"
        else:
            torch.testing.assert_close(p.grad, reference[name])
