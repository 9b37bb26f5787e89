"""MLA: alternating unimodal steps through one shared head with an orthogonal gradient projection."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from erlmr.config import ModelConfig
from erlmr.errors import ConfigError
from erlmr.methods.mla import entropy_fusion, update_projection
from support import (
    RecordingOptimizer,
    first_batch,
    setup_three,
    step_context,
)


def test_mla_projection_replaces_the_head_gradient():
    splits, model, method = setup_three("mla")
    recorder = RecordingOptimizer(model, method)
    inputs, labels = first_batch(splits)
    method.training_step(model, inputs, labels, step_context(method, model, recorder))
    assert len(recorder.head_grads) == 3  # one optimiser step per modality
    for i, m in enumerate(splits.modalities):
        feature = model({m: inputs[m]}).features[m]
        raw = torch.autograd.grad(F.cross_entropy(method.head(feature), labels), method.head.weight)[0]
        applied = recorder.head_grads[i]
        if i == 0:  # the very first update is not projected (official code)
            torch.testing.assert_close(applied, raw)
            continue
        projection = recorder.projections[i]
        torch.testing.assert_close(applied, raw @ projection.T)
        assert not torch.allclose(applied, raw, atol=1e-4)
        assert not torch.allclose(applied, raw + raw @ projection.T, atol=1e-4)


def test_mla_projection_protects_the_response_to_fitted_features():
    torch.manual_seed(0)
    seen, fresh = torch.randn(16), torch.randn(16)
    projection = update_projection(torch.eye(16), seen, alpha=0.01)
    assert torch.isclose(projection.norm(), torch.tensor(1.0))

    def reach(feature):  # how much a projected gradient ``G·Pᵀ`` can still change ``W·feature``
        return float((projection @ feature).norm() / (projection.norm() * feature.norm()))

    assert reach(seen) < 0.01 < 0.1 < reach(fresh)


def test_mla_entropy_fusion_weighs_each_sample_by_its_confident_modality():
    confident, unsure = torch.tensor([8.0, 0.0, 0.0]), torch.tensor([0.1, 0.0, 0.2])
    first = torch.stack([confident, unsure])  # confident on sample 0
    second = torch.stack([unsure.flip(0), confident.flip(0)])  # confident on sample 1, other class
    fused = entropy_fusion([first, second])
    assert fused[0].argmax() == 0 and fused[1].argmax() == 2
    log_p = torch.stack([first, second]).log_softmax(2)
    entropy = -(log_p.exp() * log_p).sum(2)
    weights = torch.exp(entropy.max(0).values - entropy)
    weights = weights / weights.sum(0)
    torch.testing.assert_close(fused, (weights.unsqueeze(2) * torch.stack([first, second])).sum(0))


def test_mla_predicts_with_the_official_equal_weights_unless_entropy_fusion_is_asked():
    for options in ({}, {"entropy_fusion": True}):
        splits, model, method = setup_three("mla", options)
        inputs, _ = first_batch(splits)
        output = method.predict(model.eval(), inputs)
        logits = [method.head(output.features[m]) for m in splits.modalities]
        expected = entropy_fusion(logits) if options else torch.stack(logits).mean(0)
        torch.testing.assert_close(output.logits, expected)
        assert not torch.allclose(entropy_fusion(logits), torch.stack(logits).mean(0))


def test_mla_needs_equal_feature_widths():
    widths = ModelConfig(encoder_options={"m0": {"hidden": 16}, "m1": {"hidden": 8}, "m2": {"hidden": 16}})
    with pytest.raises(ConfigError, match="feature widths must match.*m1.*8"):
        setup_three("mla", model_config=widths)
