"""LFM: 2·(α_cls·CE(mean ℓ) + α_align·JS) with the fitted or the learnable weight."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from resumable import train_stop_and_resume

from erlmr.errors import ConfigError
from erlmr.methods.lfm import fitted_cls_weight, hessian_vector_mean, js_divergence
from reliability.conftest import at_step  # noqa: F401 (a fixture)
from support import first_batch, method_setup, step


def test_fitted_weight_is_the_official_polynomial_and_stays_in_range():
    assert fitted_cls_weight(0) == pytest.approx(0.204623704)
    assert fitted_cls_weight(100) == pytest.approx(0.539, abs=1e-3)
    assert fitted_cls_weight(175) == pytest.approx(0.993, abs=1e-3)
    assert fitted_cls_weight(250) == fitted_cls_weight(199)  # held, where the polynomial is at −2.3
    assert fitted_cls_weight(10, schedule_epochs=20) == fitted_cls_weight(100)


def test_js_divergence_is_zero_for_equal_and_log_two_for_disjoint_predictions():
    logits = torch.randn(5, 4)
    assert float(js_divergence(logits, logits)) == pytest.approx(0.0, abs=1e-7)
    one_hot = torch.eye(4)[:2] * 60
    assert float(js_divergence(one_hot, one_hot.flip(0))) == pytest.approx(math.log(2), abs=1e-6)
    p, q = torch.tensor([[0.7, 0.3]]), torch.tensor([[0.2, 0.8]])
    m = (p + q) / 2
    by_hand = 0.5 * ((p * (p / m).log()).sum() + (q * (q / m).log()).sum())
    assert float(js_divergence(p.log(), q.log())) == pytest.approx(float(by_hand))


@pytest.mark.parametrize("strengths", [(2.5, 0.8), (2.5, 1.0, 0.8)])
def test_lfm_loss_is_twice_the_weighted_sum_of_ce_of_the_mean_and_pairwise_js(strengths):
    splits, model, method, _ = method_setup("lfm", {}, strengths, fusion="sum")
    method.on_epoch_start(model, 100)
    inputs, labels = first_batch(splits)
    result = step(method, model, inputs, labels)
    logits = [result.output.modality_logits[m] for m in splits.modalities]
    cls = fitted_cls_weight(100)
    ce = F.cross_entropy(torch.stack(logits).mean(0), labels)
    js = torch.stack([js_divergence(a, b) for a, b in itertools.combinations(logits, 2)]).mean()
    torch.testing.assert_close(result.loss, (2 * (cls * ce + (1 - cls) * js)).detach())
    assert float(result.logs["lfm_cls_weight"]) == pytest.approx(cls)
    torch.testing.assert_close(result.output.logits, torch.stack(logits).mean(0).detach())


def test_hessian_vector_mean_matches_a_hand_computation():
    w = torch.tensor([0.5, -1.0], requires_grad=True)
    u = torch.tensor([2.0], requires_grad=True)
    supervised = (w[0] * u[0]) ** 2 + w[1] ** 3  # ∇_w = (2w0u², 3w1²), ∇_u = 2w0²u
    total = 0.3 * supervised + 0.7 * (w * w).sum() * u[0]
    # δ = mean over w of H_total,w· · ∇L_cls, by hand: d/dw [∇total · v] with v = ∇L_cls held fixed
    v_w = torch.tensor([2 * 0.5 * 4.0, 3 * 1.0])
    v_u = torch.tensor([2 * 0.25 * 2.0])
    h_ww = torch.tensor([[0.3 * 2 * 4.0 + 0.7 * 2 * 2.0, 0.0], [0.0, 0.3 * 6 * -1.0 + 0.7 * 2 * 2.0]])
    h_wu = torch.tensor([[0.3 * 4 * 0.5 * 2.0 + 0.7 * 2 * 0.5], [0.7 * 2 * -1.0]])
    expected = (h_ww @ v_w + h_wu @ v_u).mean()
    torch.testing.assert_close(hessian_vector_mean(total, supervised, [w, u], w), expected)


def meta_delta(splits, model, method, align: float) -> float:
    """The hyper-gradient δ on the held-out samples, computed here from the losses written out."""
    inputs, labels = splits.train.__getitems__(method.meta_indices(len(splits.train)))
    model.eval()
    output = model(inputs)
    logits = [output.modality_logits[m] for m in splits.modalities]
    supervised = F.cross_entropy(torch.stack(logits).mean(0), labels)
    total = (1 - align) * supervised + align * js_divergence(*logits)
    params = [p for p in model.parameters() if p.requires_grad]
    return float(hessian_vector_mean(total, supervised, params, next(model.encoders["m0"].parameters())))


@pytest.mark.parametrize("alpha_lr", [1.0, 1e6])
def test_learnable_weight_moves_by_minus_lr_times_delta_and_is_clipped(alpha_lr):
    options = {"schedule": "learnable", "alpha_lr": alpha_lr, "initial_align": 0.5}
    splits, model, method, _ = method_setup("lfm", options, fusion="sum")
    meta = method.meta_indices(len(splits.train))
    assert not set(meta.tolist()) & set(method.epoch_samples(0).tolist())
    assert len(method.epoch_samples(0)) == len(splits.train) - 8
    delta = meta_delta(splits, model, method, 0.5)
    assert delta != 0
    method.on_epoch_start(model, 40)  # lr = alpha_lr / 2²
    expected = min(max(0.5 - alpha_lr / 4 * delta, 0.05), 0.95)
    assert float(method.align_weight) == pytest.approx(expected) and expected != 0.5
    assert 1 - float(method.align_weight) == pytest.approx(method.cls_weight)


def test_learnable_weight_with_zero_rate_never_moves():
    _, model, method, _ = method_setup("lfm", {"schedule": "learnable", "alpha_lr": 0.0}, fusion="sum")
    for epoch in range(3):
        method.on_epoch_start(model, epoch)
    assert float(method.align_weight) == 0.95


def test_lfm_refuses_a_head_whose_fused_logits_are_not_the_modalities():
    with pytest.raises(ConfigError, match="concat and sum"):
        method_setup("lfm", {}, fusion="gated")


def test_lfm_predicts_with_the_mean_of_the_modality_logits():
    splits, model, method, _ = method_setup("lfm", {})
    inputs, _ = first_batch(splits)
    with torch.no_grad():
        torch.testing.assert_close(method.predict(model, inputs).logits, model(inputs).logits / 2)


def test_a_learnable_run_resumes_exactly(tmp_path, at_step, monkeypatch):  # noqa: F811
    options = {"schedule": "learnable", "alpha_lr": 10.0, "initial_align": 0.5}
    records = train_stop_and_resume(tmp_path, at_step, monkeypatch, "lfm", options, stop_at=7)
    weights = [r["method"]["lfm_cls_weight"] for r in records]
    assert 0.5 != weights[0] != weights[1]  # the weight moved before each epoch
