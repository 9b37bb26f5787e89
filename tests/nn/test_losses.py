import math

import pytest
import torch
import torch.nn.functional as F

from erlmr import ConfigError, MMCLoss


def hand_cosine(a, b):
    return sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def test_mmc_loss_matches_a_hand_computation_per_sample():
    theta_a = torch.tensor([[0.1, 0.5, 1.0], [1.2, 0.3, 0.4]])
    theta_b = torch.tensor([[0.2, 0.4, 1.1], [0.1, 1.5, 0.2]])
    logits_a = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    logits_b = torch.tensor([[0.5, 0.5], [1.0, -1.0]])
    labels = torch.tensor([0, 1])
    cos = [hand_cosine(theta_a[i].tolist(), theta_b[i].tolist()) for i in range(2)]
    phase = 1 - sum(cos) / 2

    def ce(logits, y):
        return -(logits[y] - math.log(sum(math.exp(v) for v in logits)))

    ce_a = sum(ce(logits_a[i].tolist(), labels[i]) for i in range(2)) / 2
    ce_b = sum(ce(logits_b[i].tolist(), labels[i]) for i in range(2)) / 2
    loss = MMCLoss(phase_weight=0.7, ce_weight=0.3)
    value = loss([theta_a, theta_b], [logits_a, logits_b], labels)
    assert value.item() == pytest.approx(0.7 * phase + 0.3 * (ce_a + ce_b), rel=1e-5)


def test_batch_cosine_reproduces_the_authors_axis():
    theta_a, theta_b = torch.rand(6, 4), torch.rand(6, 4)
    logits, labels = [torch.zeros(6, 3)] * 2, torch.zeros(6, dtype=torch.long)
    per_feature = [hand_cosine(theta_a[:, j].tolist(), theta_b[:, j].tolist()) for j in range(4)]
    terms = MMCLoss(cosine="batch").terms([theta_a, theta_b], logits, labels)
    assert terms.phase.item() == pytest.approx(1 - sum(per_feature) / 4, rel=1e-5)
    per_sample = MMCLoss(cosine="sample").terms([theta_a, theta_b], logits, labels)
    assert per_sample.phase.item() != pytest.approx(terms.phase.item(), rel=1e-3)


def test_phase_term_averages_over_all_modality_pairs():
    phases = [torch.rand(5, 3) for _ in range(3)]
    logits, labels = [torch.zeros(5, 2)] * 3, torch.zeros(5, dtype=torch.long)
    pairs = [(0, 1), (0, 2), (1, 2)]
    expected = sum(1 - F.cosine_similarity(phases[i], phases[j], dim=1).mean() for i, j in pairs) / 3
    terms = MMCLoss().terms(phases, logits, labels)
    torch.testing.assert_close(terms.phase, expected)
    assert terms.modality_ce.item() == pytest.approx(3 * math.log(2), rel=1e-5)


def test_identical_phases_have_no_phase_loss_and_it_has_gradients():
    theta = torch.rand(4, 3, requires_grad=True)
    other = theta.detach().clone().requires_grad_(True)
    terms = MMCLoss().terms([theta, other], [torch.zeros(4, 2)] * 2, torch.zeros(4, dtype=torch.long))
    assert terms.phase.item() == pytest.approx(0.0, abs=1e-6)
    shifted = MMCLoss()([theta, torch.rand(4, 3)], [torch.zeros(4, 2)] * 2, torch.zeros(4, dtype=torch.long))
    shifted.backward()
    assert theta.grad.abs().sum() > 0


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ConfigError, match="valid: sample, batch"):
        MMCLoss(cosine="feature")
    with pytest.raises(ConfigError, match="at least two modalities"):
        MMCLoss()([torch.rand(2, 2)], [torch.zeros(2, 2)], torch.zeros(2, dtype=torch.long))
