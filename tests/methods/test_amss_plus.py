"""AMSS+: the kept units are re-weighted; by default so that the masked gradient is unbiased."""

from __future__ import annotations

import math

import pytest
import torch

from erlmr.methods.amss_plus import inclusion_probabilities, systematic_sample
from support import first_batch, joint_gradients, method_setup, step

SKEWED = torch.tensor([8.0, 4.0, 2.0, 1.0, 1.0, 0.5, 0.5, 0.25] * 4)  # 32 units, one very important


def mean_mask(method, importance, count, draws):
    total = torch.zeros_like(importance)
    for _ in range(draws):
        weights = method.unit_weights(importance, count)
        assert int((weights > 0).sum()) == count
        total += weights
    return total / draws


def test_inclusion_probabilities_sum_to_the_count_capped_at_one():
    q = inclusion_probabilities(SKEWED, 12)
    assert float(q.sum()) == pytest.approx(12) and float(q.max()) == 1.0
    uncapped = q < 1
    ratio = q[uncapped] / SKEWED[uncapped].double()
    torch.testing.assert_close(ratio, torch.full_like(ratio, float(ratio[0])))  # ∝ importance below the cap
    assert inclusion_probabilities(torch.ones(10), 4).tolist() == pytest.approx([0.4] * 10)


def test_systematic_sampling_keeps_each_unit_with_its_probability():
    generator = torch.Generator().manual_seed(0)
    q = inclusion_probabilities(SKEWED, 12)
    counts = torch.zeros(32, dtype=torch.float64)
    for _ in range(4000):
        chosen = systematic_sample(q, generator)
        assert len(chosen) == 12 and len(set(chosen.tolist())) == 12
        counts[chosen] += 1
    torch.testing.assert_close(counts / 4000, q, atol=0.03, rtol=0)


def test_default_weighting_is_unbiased_and_the_official_one_is_not():
    _, _, unbiased, _ = method_setup("amss_plus")
    importance = torch.tensor([4.0, 2.0, 1.0, 1.0] * 8)  # every q >= 0.25, so 3000 draws pin the mean to ±0.12
    torch.testing.assert_close(mean_mask(unbiased, importance, 16, 3000), torch.ones(32), atol=0.12, rtol=0)
    _, _, official, _ = method_setup("amss_plus", {"weighting": "official"})
    uniform = official.unit_weights(torch.ones(64), 32)
    assert float(uniform.sum()) / 64 == pytest.approx(64 / 4)  # E[mask] = n/4 = 16 for c = 0.5 (the released bias)


def test_kept_rows_are_scaled_by_their_weight_in_a_real_step():
    for weighting in ("inverse_probability", "official"):
        splits, model, method, _ = method_setup("amss_plus", {"weighting": weighting})
        inputs, labels = first_batch(splits)
        reference = joint_gradients(model, inputs, labels)
        state = method.get_extra_state()
        step(method, model, inputs, labels)
        method.set_extra_state(state)  # replay the same draws on the joint gradients
        keep = method.last_coefficients
        for name, p in model.named_parameters():
            if not name.startswith("encoders.") or p.dim() < 2:
                torch.testing.assert_close(p.grad, reference[name])
                continue
            g = reference[name]
            importance = g.pow(2).sum(1)
            count = math.ceil(len(importance) * keep[name.split(".")[1]])
            weights = method.unit_weights(importance, count)
            assert int((weights > 0).sum()) == count
            torch.testing.assert_close(p.grad, g * weights[:, None], msg=f"{weighting}: {name}")
            if weighting == "official":
                kept = weights > 0
                pi = importance / importance.sum()
                torch.testing.assert_close(weights[kept], 1 / (pi[kept] + 1 / len(pi)))
