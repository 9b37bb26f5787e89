"""OPM: the dominant modality's features are dropped per sample with q = q_base(1 + λ tanh(ρ − 1))."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from resumable import train_stop_and_resume

from erlmr.methods.opm import drop_probabilities, keep_masks
from reliability.conftest import at_step  # noqa: F401 (a fixture)
from support import first_batch, joint_gradients, method_setup, step, true_class_sums


def test_drop_probabilities_follow_the_official_formula_and_spare_the_weakest():
    q = drop_probabilities(torch.tensor([30.0, 10.0]), q_base=0.5, lam=0.5)
    torch.testing.assert_close(q, torch.tensor([0.5 * (1 + 0.5 * math.tanh(2.0)), 0.0]))
    three = drop_probabilities(torch.tensor([12.0, 10.0, 8.0]), q_base=0.4, lam=0.5)
    # ρ = 12/9, 10/10, 8/11: only the first is ahead of the mean of the others
    torch.testing.assert_close(three, torch.tensor([0.4 * (1 + 0.5 * math.tanh(12 / 9 - 1)), 0.0, 0.0]))
    assert drop_probabilities(torch.tensor([5.0, 5.0, 5.0]), 0.5, 0.5).eq(0).all()
    assert float(drop_probabilities(torch.tensor([1e6, 1.0]), 0.9, 1.0)[0]) == 1.0  # clipped


def test_keep_masks_drop_at_rate_p_exe_times_q():
    torch.manual_seed(0)
    q = torch.tensor([0.6, 0.0])
    masks = [keep_masks(q, 50, p_exe=0.7) for _ in range(2000)]
    executed = [m for m in masks if m is not None]
    assert len(executed) / len(masks) == pytest.approx(0.7, abs=0.03)
    dropped = torch.cat(executed).eq(0).float().mean(0)
    assert float(dropped[0]) == pytest.approx(0.6, abs=0.01) and float(dropped[1]) == 0.0


def fit_jointly(model, inputs, labels, steps: int = 15) -> None:
    """A few plain joint steps on one batch, after which the strong modality m0 is clearly ahead."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(steps):
        optimizer.zero_grad()
        F.cross_entropy(model(inputs).logits, labels).backward()
        optimizer.step()
    model.zero_grad()


def test_opm_step_drops_rows_of_the_dominant_features_and_rescales_by_one_minus_theta():
    splits, model, method, _ = method_setup("opm", {"warmup_epochs": 0, "p_exe": 1.0, "q_base": 0.5})
    model.eval()  # no dropout: the forward pass draws nothing from the RNG
    inputs, labels = first_batch(splits)
    fit_jointly(model, inputs, labels)
    torch.manual_seed(3)
    result = step(method, model, inputs, labels)

    with torch.no_grad():
        output = model(inputs)
    scores = true_class_sums(output, splits.modalities, labels)
    ratio = float(scores[0] / scores[1])
    assert ratio > 1.2, "m0 should be ahead on this batch"
    q0 = 0.5 * (1 + 0.5 * math.tanh(ratio - 1))
    torch.manual_seed(3)  # replay the step's draws: the execution draw, then the keep bits
    torch.rand(())
    keep = torch.bernoulli(torch.tensor([1 - q0, 1.0]).expand(len(labels), 2).contiguous())
    assert 0 < keep[:, 0].sum() < len(labels) and keep[:, 1].eq(1).all()
    theta = q0 * 16 / 32  # both widths are 16
    features = [output.features[m] * keep[:, i : i + 1] / (1 - theta) for i, m in enumerate(splits.modalities)]
    expected = F.cross_entropy(model.head(features).logits, labels)
    torch.testing.assert_close(result.loss, expected.detach())
    assert float(result.logs["opm_q_m0"]) == pytest.approx(q0) and float(result.logs["opm_q_m1"]) == 0.0
    assert float(result.logs["opm_dropped_m0"]) == pytest.approx(1 - float(keep[:, 0].mean()))


@pytest.mark.parametrize("options", [{"warmup_epochs": 6}, {"warmup_epochs": 0, "p_exe": 0.0}])
def test_opm_trains_jointly_in_the_warm_up_and_on_unmodulated_batches(options):
    splits, model, method, _ = method_setup("opm", options)
    inputs, labels = first_batch(splits)
    reference = joint_gradients(model, inputs, labels)
    method.on_epoch_start(model, 5)
    step(method, model, inputs, labels)
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, reference[name], msg=name)


def test_opm_predicts_with_the_plain_model():
    splits, model, method, _ = method_setup("opm", {"warmup_epochs": 0, "p_exe": 1.0})
    inputs, _ = first_batch(splits)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(method.predict(model, inputs).logits, model(inputs).logits)


def test_a_run_that_drops_resumes_exactly(tmp_path, at_step, monkeypatch):  # noqa: F811
    records = train_stop_and_resume(tmp_path, at_step, monkeypatch, "opm", {"warmup_epochs": 0}, stop_at=7)
    assert records[1]["method"]["opm_dropped_m0"] + records[1]["method"]["opm_dropped_m1"] > 0
