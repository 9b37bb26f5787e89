"""relearning: encoders pulled back towards their initial weights by tanh(λ·|purity_train − purity_val|)."""

from __future__ import annotations

import copy
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from resumable import train_stop_and_resume

from erlmr.methods import relearning
from erlmr.methods.compose import build_method
from erlmr.methods.relearning import cluster_purity, purity
from reliability.conftest import at_step  # noqa: F401 (a fixture)
from support import method_setup


def test_purity_labels_each_cluster_by_its_majority():
    labels = np.array([0, 0, 1, 1, 1, 2, 2, 0])
    clusters = np.array([0, 0, 0, 1, 1, 1, 2, 2])
    assert purity(labels, clusters) == pytest.approx((2 + 2 + 1) / 8)


def test_cluster_purity_finds_separated_blobs():
    rng = np.random.default_rng(0)
    centres = np.array([[0, 0], [10, 0], [0, 10], [10, 10]], dtype=float)
    blob = np.repeat(np.arange(4), 10)
    features = centres[blob] + rng.normal(0, 0.1, (40, 2))
    assert cluster_purity(features, blob, 4, restarts=10) == 1.0
    # each blob holds two classes half and half: the majority label is right for half the samples
    mixed = np.where(np.arange(40) % 2 == 0, blob, (blob + 1) % 4)
    assert cluster_purity(features, mixed, 4, restarts=10) == 0.5


def test_reinit_is_due_after_every_reinit_epoch_at_most_reinit_num_times():
    _, _, method, _ = method_setup("relearning")
    assert [e for e in range(100) if method.due(e)] == [20, 40, 60]  # outside a run: the official epochs


def test_the_default_schedule_scales_with_the_run_so_a_short_run_still_relearns():
    splits, model, _, context = method_setup("relearning")
    for epochs, expected in ((90, [20, 40, 60]), (20, [4, 8, 12]), (3, [1, 2])):
        method = build_method("relearning", {}, model, replace(context, epochs=epochs))
        assert [e for e in range(epochs) if method.due(e)] == expected
    method = build_method("relearning", {"reinit_epoch": 5}, model, replace(context, epochs=20))
    assert [e for e in range(20) if method.due(e)] == [5, 10, 15]


@pytest.mark.parametrize("val_purity", [0.5, 1.0])
def test_soft_reinit_moves_each_encoder_by_tanh_of_the_purity_gap(monkeypatch, val_purity):
    splits, model, method, _ = method_setup("relearning", {"reinit_epoch": 1})
    initial = copy.deepcopy(model.state_dict())
    with torch.no_grad():  # "training" happened: every weight moved away from its initial value
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    current = copy.deepcopy(model.state_dict())
    train_size = len(splits.train)
    monkeypatch.setattr(
        relearning, "cluster_purity", lambda f, labels, k, r: 1.0 if len(labels) == train_size else val_purity
    )
    logs = method.on_epoch_end(model, 1)
    alpha = math.tanh(3.0 * (1.0 - val_purity))
    assert logs == pytest.approx({"relearning_alpha_m0": alpha, "relearning_alpha_m1": alpha})
    for name, value in model.state_dict().items():
        if name.startswith("encoders."):
            torch.testing.assert_close(value, alpha * initial[name] + (1 - alpha) * current[name], atol=1e-6, rtol=0)
        else:
            assert torch.equal(value, current[name]), name  # the head is untouched
    if val_purity == 1.0:
        assert all(torch.equal(v, current[k]) for k, v in model.state_dict().items())


def test_diagnosis_runs_k_means_on_the_train_and_val_features():
    _, model, method, _ = method_setup("relearning", {"reinit_epoch": 1})
    logs = method.on_epoch_end(model, 1)
    assert set(logs) == {"relearning_alpha_m0", "relearning_alpha_m1"}
    assert all(0 <= a < 1 for a in logs.values())
    assert method.on_epoch_end(model, 0) == {}


def test_a_run_with_a_reinit_resumes_exactly(tmp_path, at_step, monkeypatch):  # noqa: F811
    # stopped in step 2 of epoch 1, before the re-initialisation that ends it
    records = train_stop_and_resume(tmp_path, at_step, monkeypatch, "relearning", {"reinit_epoch": 1}, stop_at=7)
    assert "relearning_alpha_m0" in records[1]["method"]
