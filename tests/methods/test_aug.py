"""AUG: per-modality boosting through one shared classifier; learners assigned to the weaker modality, and trained."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from erlmr.errors import ConfigError
from support import first_batch, method_setup, setup_three, step_context


class CountingSGD(torch.optim.SGD):
    """SGD that counts its steps."""

    def __init__(self, params, lr):
        super().__init__(params, lr=lr)
        self.steps = 0

    def step(self, closure=None):
        self.steps += 1
        return super().step(closure)


def aug_step(method, model, inputs, labels, lr=0.1):
    optimizer = CountingSGD([*model.parameters(), *method.parameters()], lr)
    result = method.training_step(model, inputs, labels, step_context(method, model, optimizer))
    return result, optimizer


def test_aug_residual_loss_is_classification_plus_residual_error():
    splits, model, method, _ = method_setup("aug", {"hidden": 8})
    method.learner_counts[0] = 1
    inputs, labels = first_batch(splits)
    feature = model(inputs).features["m0"]
    parts = method.learner_logits("m0", feature, 1)
    base, newest = parts
    p_prev = base.softmax(1).gather(1, labels[:, None]).squeeze(1).detach()
    expected = (
        F.cross_entropy(base + newest, labels)
        + F.cross_entropy(base, labels)
        + ((1 - 0.5 * p_prev) * F.cross_entropy(newest, labels, reduction="none")).mean()
    )
    torch.testing.assert_close(method.modality_loss(parts, labels), expected)
    # The residual weight only changes the newest learner's term; at 0 it is the plain CE.
    method.options.residual_weight = 0.0
    plain = F.cross_entropy(base + newest, labels) + F.cross_entropy(base, labels) + F.cross_entropy(newest, labels)
    torch.testing.assert_close(method.modality_loss(parts, labels), plain)
    torch.testing.assert_close(method.modality_loss([base], labels), F.cross_entropy(base, labels))


def test_aug_assigns_learners_to_the_weaker_modality_only_when_the_gap_is_large():
    _, model, method = setup_three("aug", {"max_learners": 2})
    for sums, expected in [((2.0, 1.0, 2.0), 1), ((1.0, 1.0, 1.0), None), ((1.0, 1.0, 0.995), None)]:
        method.learner_counts.zero_()
        method.confidence_sums.copy_(torch.tensor(sums))
        assert method.assign_learner() == expected
        assert method.learner_counts.tolist() == [0, int(expected == 1), 0]
    method.confidence_sums.copy_(torch.tensor([3.0, 3.0, 1.0]))
    assert [method.assign_learner() for _ in range(3)] == [2, 2, None]  # max_learners reached
    method.confidence_sums.copy_(torch.tensor([3.0, 3.0, 1.0]))
    logs = method.on_epoch_end(model, 4)  # not a check epoch (0, or every 20th when the run length is unknown)
    assert logs["aug_learners_m2"] == 2 and logs["aug_confidence_m2"] == 1.0 and not method.confidence_sums.any()


@pytest.mark.parametrize("epochs,every,period", [(200, None, 20), (30, None, 3), (5, None, 1), (200, 7, 7)])
def test_aug_checks_every_tenth_of_the_run_as_official(epochs, every, period):
    _, model, method = setup_three("aug", {"check_every": every})
    method.context.epochs = epochs
    assert method.check_period == period
    method.confidence_sums.copy_(torch.tensor([3.0, 3.0, 1.0]))
    method.on_epoch_end(model, period - 1)
    assert method.learner_counts.tolist() == [0, 0, 1]


def test_aug_takes_one_step_per_modality_and_trains_the_newest_learner():
    splits, model, method = setup_three("aug", {"hidden": 8})
    method.learner_counts[1] = 1
    inputs, labels = first_batch(splits)
    active, idle = method.learners["m1"][0], method.learners["m1"][1]
    other = method.learners["m0"][0]
    before = [layer.weight.detach().clone() for layer in (active, idle, other)]
    result, optimizer = aug_step(method, model, inputs, labels)
    assert optimizer.steps == len(splits.modalities)
    assert not torch.allclose(active.weight, before[0])  # the official learners never change
    torch.testing.assert_close(idle.weight, before[1])
    torch.testing.assert_close(other.weight, before[2])
    with torch.no_grad():
        ensembles = [result.output.modality_logits[m] for m in splits.modalities]
        sums = torch.stack([x.softmax(1).gather(1, labels[:, None]).sum() for x in ensembles])
    torch.testing.assert_close(method.confidence_sums, sums)
    torch.testing.assert_close(result.output.logits, torch.stack(ensembles).mean(0))


def test_aug_predicts_the_weighted_sum_of_the_present_ensembles():
    splits, model, method, _ = method_setup("aug", {"hidden": 8, "fusion_weights": [0.4, 0.6]})
    method.learner_counts[1] = 2
    inputs, _ = first_batch(splits, 8)
    model.eval()
    with torch.no_grad():
        output = method.predict(model, inputs)
        features = model(inputs).features
        ensembles = [torch.stack(method.learner_logits(m, features[m], k)).sum(0) for m, k in (("m0", 0), ("m1", 2))]
        alone = method.predict(model, inputs, absent=["m0"])
        nothing = method.predict(model, inputs, absent=["m0", "m1"])
    torch.testing.assert_close(output.logits, 0.4 * ensembles[0] + 0.6 * ensembles[1])
    torch.testing.assert_close(alone.logits, ensembles[1])
    assert torch.allclose(nothing.logits, nothing.logits[:1].expand_as(nothing.logits))


def test_aug_fusion_weights_are_checked():
    with pytest.raises(ConfigError, match="2 values for 3 modalities"):
        setup_three("aug", {"fusion_weights": [0.4, 0.6]})
    with pytest.raises(ConfigError, match="non-negative"):
        setup_three("aug", {"fusion_weights": [1.0, -1.0, 1.0]})
