"""G-Blending, MLA, MMPareto and ReconBoost: each mechanism does what its paper says, and each trains."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from erlmr.config import ModelConfig
from erlmr.data import load_dataset
from erlmr.errors import ConfigError
from erlmr.methods import build_method
from erlmr.methods.gblending import LossSnapshot, blend_weights, head_losses
from erlmr.methods.mla import entropy_fusion, update_projection
from erlmr.methods.mmpareto import combine_gradients, pareto_weights
from erlmr.methods.reconboost import RECTIFY, boosting_terms, consolidation_term, schedule_for
from erlmr.nn.pareto import min_norm_weights
from erlmr.training.trainer import train
from support import context_for, model_for, step_context, take_step

SMALL_SYNTHETIC = {"strengths": [2.5, 1.0, 0.8], "train_size": 96, "test_size": 48, "dim": 8}


def make_setup(method: str, options: dict | None = None, model_config: ModelConfig | None = None, seed: int = 0):
    torch.manual_seed(seed)
    splits = load_dataset("synthetic", None, 0, 0.25, SMALL_SYNTHETIC)
    model = model_for(model_config or ModelConfig(encoder_options={m: {"hidden": 16} for m in splits.modalities}), splits, False)
    context = context_for(splits, 32)
    return splits, model, build_method(method, options or {}, model, context)


def first_batch(splits, size: int = 32):
    return splits.train.__getitems__(range(size))


class RecordingOptimizer:
    """Stands in for the trainer's optimiser: records what each step would apply, changes nothing."""

    def __init__(self, model, method):
        self.model, self.head_grads, self.projections, self.method = model, [], [], method
        self.state = {}

    def step(self):
        self.head_grads.append(self.method.head.weight.grad.clone())
        self.projections.append(self.method.projection.clone())

    def zero_grad(self, set_to_none=True):
        self.model.zero_grad(set_to_none=True)
        self.method.zero_grad(set_to_none=True)


# --------------------------------------------------------------------------------------------- G-Blending

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
    splits, model, method = make_setup("gblending")
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
    splits, model, method = make_setup("gblending", {"super_epoch": 1})
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
    assert abs(sum(logs.values()) - 1) < 1e-5 and set(logs) == {"gblend_weight_fused", "gblend_weight_m0", "gblend_weight_m1", "gblend_weight_m2"}


# ------------------------------------------------------------------------------------------------- MLA

def test_mla_projection_replaces_the_head_gradient():
    splits, model, method = make_setup("mla")
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


def test_mla_needs_equal_feature_widths():
    widths = ModelConfig(encoder_options={"m0": {"hidden": 16}, "m1": {"hidden": 8}, "m2": {"hidden": 16}})
    with pytest.raises(ConfigError, match="feature widths must match.*m1.*8"):
        make_setup("mla", model_config=widths)


# -------------------------------------------------------------------------------------------- MMPareto

def test_mmpareto_uses_min_norm_weights_only_when_gradients_conflict():
    multimodal = torch.tensor([1.0, 0.0, 0.0])
    conflicting = torch.tensor([-0.5, 1.0, 0.0])
    weights, cosine = pareto_weights(multimodal, conflicting)
    assert cosine < 0
    torch.testing.assert_close(weights, min_norm_weights([multimodal, conflicting]))
    assert not torch.allclose(weights, torch.full((2,), 0.5))
    combined = weights[0] * multimodal + weights[1] * conflicting
    assert combined @ multimodal >= -1e-6 and combined @ conflicting >= -1e-6  # neither loss goes up

    agreeing = torch.tensor([1.0, 1.0, 0.0])
    weights, cosine = pareto_weights(multimodal, agreeing)
    assert cosine > 0
    torch.testing.assert_close(weights, torch.full((2,), 0.5))
    assert not torch.allclose(min_norm_weights([multimodal, agreeing]), weights)


def test_mmpareto_combination_keeps_at_least_the_plain_sum_magnitude():
    g_mm = [torch.tensor([2.0, 0.0]), torch.tensor([3.0]), torch.tensor([1.0])]
    g_u = [torch.tensor([0.0, 1.0]), torch.tensor([-1.0]), torch.tensor([-1.0])]
    weights = torch.tensor([0.1, 0.9])
    combined = combine_gradients(g_mm, g_u, weights, gamma=1.5)
    # 2(w₀g_mm + w₁g_u) is shorter than g_mm + g_u in the first two tensors: scaled up to its norm
    torch.testing.assert_close(combined[0], 1.5 * torch.tensor([0.4, 1.8]) * (5**0.5 / 3.4**0.5))
    torch.testing.assert_close(combined[1], 1.5 * torch.tensor([-0.8]) * 2.5)
    # ... and longer in the third (the plain sum is 0): only γ applies
    torch.testing.assert_close(combined[2], 1.5 * torch.tensor([-1.6]))


def test_mmpareto_step_takes_one_forward_and_sets_encoder_gradients():
    splits, model, method = make_setup("mmpareto")
    inputs, labels = first_batch(splits)
    calls = []
    handle = model.register_forward_hook(lambda *args: calls.append(1))
    result = take_step(method, model, inputs, labels)
    handle.remove()
    assert len(calls) == 1
    output = model(inputs)
    multimodal = F.cross_entropy(output.logits, labels)
    for m in splits.modalities:
        params = list(model.encoders[m].parameters())
        unimodal = F.cross_entropy(method.heads[m](output.features[m]), labels)
        g_mm = torch.autograd.grad(multimodal, params, retain_graph=True)
        g_u = torch.autograd.grad(unimodal, params, retain_graph=True)
        flat = [torch.cat([g.flatten() for g in grads]) for grads in (g_mm, g_u)]
        weights, cosine = pareto_weights(*flat)
        torch.testing.assert_close(result.logs[f"mmpareto_cosine_{m}"], cosine)
        for p, expected in zip(params, combine_gradients(g_mm, g_u, weights, 1.5)):
            torch.testing.assert_close(p.grad, expected)
    head_grad = torch.autograd.grad(multimodal, model.head.linear.weight)[0]
    torch.testing.assert_close(model.head.linear.weight.grad, head_grad)


# ------------------------------------------------------------------------------------------ ReconBoost

def test_reconboost_schedule_alternates_modalities_then_rectifies():
    plan = [schedule_for(e, ["a", "b", "c"], 2, 1) for e in range(10)]
    assert [(s.learner, s.phase) for s in plan[:6]] == [
        ("a", "learn"), ("a", "learn"), ("a", RECTIFY), ("b", "learn"), ("b", "learn"), ("b", RECTIFY)
    ]
    assert [s.stage for s in plan] == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3]
    assert plan[9].learner == "a" and plan[9].previous == "c" and plan[0].previous is None
    assert all(s.phase == "learn" for s in (schedule_for(e, ["a", "b"], 3, 0) for e in range(6)))


def test_reconboost_reconcilement_downweights_samples_the_others_fit():
    learner = torch.zeros(2, 3, requires_grad=True)
    rest = torch.tensor([[6.0, 0.0, 0.0], [0.0, 6.0, 0.0]])  # others right on sample 0, wrong on sample 1
    labels = torch.tensor([0, 0])
    fit, reconcile = boosting_terms(learner, rest, labels, fit_weight=5.0, reconcile_weight=1.0)
    grad = torch.autograd.grad(fit + reconcile, learner)[0]
    assert grad[0].norm() < 0.85 * grad[1].norm()
    fit_only = torch.autograd.grad(sum(boosting_terms(learner, rest, labels, 5.0, 0.0)), learner)[0]
    torch.testing.assert_close(fit_only[0], fit_only[1])


def test_reconboost_learner_terms_carry_gradient_into_the_current_modality_only():
    splits, model, method = make_setup("reconboost", {"stage_epochs": 1, "rectify_epochs": 1})
    method.on_epoch_start(model, 2)  # stage 1: learner m1, previous learner m0
    assert (method.schedule.learner, method.schedule.previous) == ("m1", "m0")
    inputs, labels = first_batch(splits)
    logits = model(inputs).modality_logits
    _, reconcile = boosting_terms(logits["m1"], method.ensemble({m: logits[m] for m in ("m0", "m2")}), labels, 5.0, 1.0)
    consolidation = consolidation_term(logits["m1"], logits["m0"], 0.5)
    learner, others = list(model.encoders["m1"].parameters()), list(model.encoders["m0"].parameters())
    for term in (reconcile, consolidation):
        grads = torch.autograd.grad(term, learner + others, retain_graph=True, allow_unused=True)
        assert sum(float(g.abs().sum()) for g in grads[: len(learner)]) > 0
        assert all(g is None for g in grads[len(learner):])
    _, logs = method.learner_loss(logits, labels)
    torch.testing.assert_close(logs["reconboost_consolidation"], consolidation.detach())


def test_reconboost_trains_one_learner_then_everything():
    splits, model, method = make_setup("reconboost", {"stage_epochs": 1, "rectify_epochs": 1})
    inputs, labels = first_batch(splits)
    method.on_epoch_start(model, 0)
    take_step(method, model, inputs, labels)
    assert all(p.grad is not None for p in model.encoders["m0"].parameters())
    assert all(p.grad is None for m in ("m1", "m2") for p in model.encoders[m].parameters())
    model.zero_grad(set_to_none=True)
    optimizer = torch.optim.SGD([*model.parameters(), method.rate], lr=0.1, momentum=0.9)
    optimizer.state[method.rate]["momentum_buffer"] = torch.ones(())
    method.on_epoch_start(model, 1)  # rectification: fresh optimiser state, every encoder and β learn
    take_step(method, model, inputs, labels, optimizer, index=0)
    assert len(optimizer.state) == 0
    optimizer.state[method.rate]["momentum_buffer"] = torch.ones(())
    take_step(method, model, inputs, labels, optimizer, index=1)  # later steps of the epoch keep the state
    assert len(optimizer.state) == 1
    assert all(p.grad is not None for m in splits.modalities for p in model.encoders[m].parameters())
    assert method.rate.grad is not None
    output = method.predict(model, inputs)
    torch.testing.assert_close(output.logits, method.rate * sum(output.modality_logits.values()))


# ---------------------------------------------------------------------------------------- state, training

@pytest.mark.parametrize(
    "name, mutate, read",
    [
        ("gblending", lambda m: m.weights.copy_(torch.tensor([0.1, 0.2, 0.3, 0.4])), lambda m: m.weights),
        ("mla", lambda m: m.projection.copy_(torch.randn(16, 16)), lambda m: m.projection),
        ("mmpareto", lambda m: m.heads["m0"].weight.data.normal_(), lambda m: m.heads["m0"].weight),
        ("reconboost", lambda m: m.rate.data.fill_(2.5), lambda m: m.rate),
    ],
)
def test_method_state_round_trips(name, mutate, read):
    _, _, method = make_setup(name)
    mutate(method)
    _, _, fresh = make_setup(name)
    fresh.load_state_dict(method.state_dict())
    torch.testing.assert_close(read(fresh), read(method))


@pytest.mark.parametrize("method", ["gblending", "mla", "mmpareto", "reconboost"])
@pytest.mark.parametrize("data", [{"dataset": "basicmotions"}, {"dataset": "synthetic", "options": SMALL_SYNTHETIC}])
def test_method_trains_two_epochs(method, data, tmp_path):
    options = {"gblending": {"super_epoch": 1}, "reconboost": {"stage_epochs": 1, "rectify_epochs": 1}}.get(method, {})
    result = train({
        "data": data,
        "method": {"name": method, "options": options},
        "train": {"epochs": 2, "quiet": True, "run_dir": str(tmp_path / "run"), "device": "cpu"},
    })
    records = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [0, 1]
    assert all(torch.isfinite(torch.tensor(r["train_loss"])) for r in records)
    assert 0 <= result.summary["test"]["accuracy"] <= 1
    assert set(result.summary["test"]["modality_accuracy"]) == set(result.summary["modalities"])
