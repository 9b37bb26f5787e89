"""Baselines part A: unimodal, OGM, OGM-GE, MMCosine, PMR, AGM, and gradient-modulator composition.

Every mechanism test compares against a plain joint step on the same weights and batch, so switching
the mechanism off makes it fail.
"""
from __future__ import annotations

import copy
import json
import math

import pytest
import torch
import torch.nn.functional as F

import erlmr
from erlmr.config import ModelConfig
from erlmr.data import load_dataset
from erlmr.errors import ConfigError
from erlmr.methods import build_method
from erlmr.methods.agm import shapley_matrix
from erlmr.methods.mmcosine import CosineHead
from support import context_for, model_for, take_step


def setup(method: str, options: dict | None = None, strengths=(2.5, 0.8), fusion="concat", euler=False, hidden=16):
    splits = load_dataset(
        "synthetic", None, 0, 0.1, {"strengths": list(strengths), "dim": 8, "train_size": 64, "test_size": 8}
    )
    config = ModelConfig(
        fusion=fusion, encoder_options={m: {"hidden": hidden} for m in splits.modalities}, euler_dim=8, euler_dropout=0.0
    )
    torch.manual_seed(0)
    model = model_for(config, splits, euler)
    context = context_for(splits, 16)
    return splits, model, build_method(method, options or {}, model, context), context


def first_batch(splits, size=32):
    return splits.train.__getitems__(list(range(size)))


def joint_gradients(model, inputs, labels) -> dict[str, torch.Tensor]:
    twin = copy.deepcopy(model)
    F.cross_entropy(twin(inputs).logits, labels).backward()
    return {name: p.grad for name, p in twin.named_parameters() if p.grad is not None}


def step(method, model, inputs, labels):
    return take_step(method, model, inputs, labels)


def true_class_sums(output, modalities, labels) -> torch.Tensor:
    return torch.stack([output.modality_logits[m].softmax(1).gather(1, labels[:, None]).sum() for m in modalities])


def expected_ogm_coefficients(scores: torch.Tensor, alpha: float) -> torch.Tensor:
    others = torch.stack([torch.cat([scores[:m], scores[m + 1 :]]).mean() for m in range(len(scores))])
    ratios = scores / others
    return torch.where(ratios > 1, 1 - torch.tanh(alpha * ratios), torch.ones_like(ratios))


def assert_encoder_scaling(model, reference, coefficients: dict[str, float]):
    """Encoder m's gradient is ``coefficients[m]`` × the joint one; everything else is unchanged."""
    for name, p in model.named_parameters():
        parts = name.split(".")
        k = coefficients[parts[1]] if parts[0] == "encoders" else 1.0
        torch.testing.assert_close(p.grad, reference[name] * k, msg=f"gradient of {name}")


# ---------------------------------------------------------------- unimodal


@pytest.mark.parametrize("options", [{}, {"modality": "m7"}])
def test_unimodal_needs_a_known_modality(options):
    with pytest.raises(ConfigError, match=r"modality.*\['m0', 'm1'\]"):
        setup("unimodal", options)


def test_unimodal_never_runs_the_other_encoders():
    splits, model, method, _ = setup("unimodal", {"modality": "m1"})

    def refuse(module, args):
        raise AssertionError("the m0 encoder ran")

    model.encoders["m0"].register_forward_pre_hook(refuse)
    inputs, labels = first_batch(splits)
    result = step(method, model, inputs, labels)
    assert all(p.grad is None for p in model.encoders["m0"].parameters())
    assert all(p.grad is not None for p in model.encoders["m1"].parameters())
    scrambled = {**inputs, "m0": torch.randn_like(inputs["m0"])}
    with torch.no_grad():
        torch.testing.assert_close(method.predict(model, scrambled).logits, result.output.logits.detach())


# ---------------------------------------------------------------- OGM / OGM-GE


@pytest.mark.parametrize("strengths", [(2.5, 0.8), (2.5, 1.0, 0.8)])
def test_ogm_scales_each_encoder_by_its_coefficient_and_leaves_the_head(strengths):
    alpha = 0.5
    splits, model, method, _ = setup("ogm", {"alpha": alpha}, strengths)
    inputs, labels = first_batch(splits)
    reference = joint_gradients(model, inputs, labels)
    result = step(method, model, inputs, labels)
    expected = expected_ogm_coefficients(true_class_sums(result.output, splits.modalities, labels), alpha)
    assert expected.min() < 0.99, "the batch should have a dominant modality"
    assert (expected == 1).any(), "and a modality that is not shrunk"
    coefficients = dict(zip(splits.modalities, expected.tolist()))
    assert method.last_coefficients == pytest.approx(coefficients)
    assert float(result.logs["ogm_coefficient_m0"]) == pytest.approx(coefficients["m0"])
    assert_encoder_scaling(model, reference, coefficients)


def test_ogm_does_nothing_outside_its_window():
    splits, model, method, _ = setup("ogm", {"alpha": 0.5, "modulation_end": 1})
    method.on_epoch_start(model, 2)
    inputs, labels = first_batch(splits)
    reference = joint_gradients(model, inputs, labels)
    step(method, model, inputs, labels)
    assert set(method.last_coefficients.values()) == {1.0}
    assert_encoder_scaling(model, reference, dict.fromkeys(splits.modalities, 1.0))


def test_ogm_ge_adds_noise_with_each_gradients_std_to_every_encoder():
    splits, model, method, _ = setup("ogm_ge", {"alpha": 0.5}, hidden=128)
    inputs, labels = first_batch(splits)
    reference = joint_gradients(model, inputs, labels)
    step(method, model, inputs, labels)
    coefficients = method.last_coefficients
    assert min(coefficients.values()) < 1 and max(coefficients.values()) == 1
    checked = 0
    for name, p in model.named_parameters():
        if not name.startswith("encoders."):
            torch.testing.assert_close(p.grad, reference[name])
            continue
        noise = p.grad - coefficients[name.split(".")[1]] * reference[name]
        if noise.numel() >= 1000:
            assert noise.std() / reference[name].std() == pytest.approx(1.0, abs=0.06), name
            assert abs(float(noise.mean())) < 0.1 * float(reference[name].std()), name
            checked += 1
    assert checked == 4  # both layers of both encoders, the non-dominant encoder included


def test_ogm_options_are_checked():
    with pytest.raises(ConfigError, match="alpha"):
        setup("ogm", {"alpha": -1.0})
    with pytest.raises(ConfigError, match="modulation_end"):
        setup("ogm_ge", {"modulation_start": 5, "modulation_end": 2})


# ---------------------------------------------------------------- composition


def test_erlmr_plus_ogm_scales_erlmrs_gradient_by_the_coefficient():
    alpha = 0.5
    splits, model, composed, context = setup("erlmr+ogm", {"ogm": {"alpha": alpha}}, euler=True)
    twin = copy.deepcopy(model)
    plain = build_method("erlmr", {}, twin, context)
    inputs, labels = first_batch(splits)
    take_step(plain, twin, inputs, labels)
    reference = {name: p.grad for name, p in twin.named_parameters()}
    result = step(composed, model, inputs, labels)
    expected = expected_ogm_coefficients(true_class_sums(result.output, splits.modalities, labels), alpha)
    assert expected.min() < 0.99
    coefficients = dict(zip(splits.modalities, expected.tolist()))
    assert composed.parts[1].last_coefficients == pytest.approx(coefficients)
    assert_encoder_scaling(model, reference, coefficients)


def test_a_method_that_does_not_modulate_gradients_cannot_follow_a_plus():
    with pytest.raises(ConfigError, match=r"cannot compose 'erlmr\+pmr'.*\['pmr'\].*ogm, ogm_ge"):
        setup("erlmr+pmr", euler=True)


# ---------------------------------------------------------------- PMR


def test_pmr_prototypes_are_class_means_then_blend_with_momentum():
    splits, model, method, _ = setup("pmr", {"momentum": 0.25})
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
    splits, model, method, _ = setup("pmr", {"alpha": alpha, "squared_distance": squared})
    method.on_epoch_start(model, 0)  # prototypes from a stratified tenth of the training split
    assert [tuple(p.shape) for p in method.prototypes] == [(4, 16), (4, 16)]
    inputs, labels = first_batch(splits)
    reference = joint_gradients(model, inputs, labels)
    result = step(method, model, inputs, labels)
    features = result.output.features
    sims = [-torch.cdist(features[m], p) ** (2 if squared else 1) for m, p in zip(splits.modalities, method.prototypes)]
    scores = torch.stack([s.softmax(1).gather(1, labels[:, None]).sum() for s in sims])
    slow = int(scores.argmin())
    expected = F.cross_entropy(result.output.logits, labels) + alpha * F.cross_entropy(sims[slow], labels)
    torch.testing.assert_close(result.loss, expected.detach())
    for name, p in model.named_parameters():
        if name.startswith(f"encoders.{splits.modalities[slow]}."):
            assert not torch.allclose(p.grad, reference[name]), f"{name} should get the prototype gradient"
        else:
            torch.testing.assert_close(p.grad, reference[name])


# ---------------------------------------------------------------- AGM


def test_agm_boosts_the_modality_whose_loss_falls_behind_its_running_mean():
    alpha = 1.0
    _, _, method, _ = setup("agm", {"alpha": alpha})
    method.running_scores.copy_(torch.tensor([1.0, 1.0]))
    method.steps.fill_(10)
    k = method.update_coefficients(torch.tensor([1.5, 1.0]))  # m0's loss rose above its usual level
    assert k[0] > 1 > k[1]
    torch.testing.assert_close(k, torch.exp(alpha * (1 - torch.exp(torch.tensor([-0.5, 0.5])))))
    torch.testing.assert_close(method.running_scores, torch.tensor([(10 + 1.5) / 11, 1.0]))


def test_agm_shapley_weights():
    two = shapley_matrix(2, [(0, 1), (0,), (1,)])
    torch.testing.assert_close(two, torch.tensor([[0.5, 0.5, -0.5], [0.5, -0.5, 0.5]]))
    three = shapley_matrix(3, [(0, 1, 2), (0, 1), (0, 2), (1, 2), (0,), (1,), (2,)])
    torch.testing.assert_close(three.sum(0), torch.tensor([1.0, 0, 0, 0, 0, 0, 0]))  # responses sum to f(all)


def test_agm_responses_follow_the_official_two_modality_formula():
    splits, model, method, _ = setup("agm", fusion="gated")
    inputs, _ = first_batch(splits)
    full, responses = method.responses(model, inputs)
    with torch.no_grad():
        model.eval()
        only_m0 = model(inputs, absent=["m1"]).logits
        only_m1 = model(inputs, absent=["m0"]).logits
    torch.testing.assert_close(responses[0], 0.5 * (full.logits - only_m1 + only_m0))
    torch.testing.assert_close(responses[1], 0.5 * (full.logits - only_m0 + only_m1))


@pytest.mark.parametrize("strengths", [(2.5, 0.8), (2.5, 1.0, 0.8)])
def test_agm_scales_each_modalitys_gradient_by_its_coefficient(strengths):
    # With a concat head the model is additive over modalities, so φ_m = modality m's own logits and
    # its encoder's gradient is exactly k_m times the joint one.
    splits, model, method, _ = setup("agm", {"alpha": 5.0, "clip_norm": 0.0}, strengths)
    inputs, labels = first_batch(splits)
    reference = joint_gradients(model, inputs, labels)
    full, responses = method.responses(copy.deepcopy(model), inputs)
    for m, response in zip(splits.modalities, responses):
        torch.testing.assert_close(response, full.modality_logits[m])
    result = step(method, model, inputs, labels)
    torch.testing.assert_close(result.loss, F.cross_entropy(full.logits, labels).detach())
    k = method.last_coefficients
    assert max(abs(v - 1) for v in k.values()) > 0.01
    for name, p in model.named_parameters():
        if name.startswith("encoders."):
            torch.testing.assert_close(p.grad, k[name.split(".")[1]] * reference[name], msg=name)


def test_agm_outside_its_window_is_joint_training_but_keeps_its_running_means():
    splits, model, method, _ = setup("agm", {"alpha": 5.0, "clip_norm": 0.0, "modulation_end": 0})
    method.on_epoch_start(model, 1)
    inputs, labels = first_batch(splits)
    reference = joint_gradients(model, inputs, labels)
    step(method, model, inputs, labels)
    assert set(method.last_coefficients.values()) == {1.0}
    assert method.steps == 1 and bool((method.running_scores > 0).all())
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, reference[name], msg=name)


# ---------------------------------------------------------------- MMCosine


def test_mmcosine_logits_are_scaled_cosines():
    scale = 7.0
    splits, model, method, _ = setup("mmcosine", {"scale": scale}, (2.5, 1.0, 0.8))
    assert isinstance(method.head, CosineHead)
    assert {id(p) for p in method.head.parameters()} <= {id(p) for p in method.parameters()}
    inputs, _ = first_batch(splits)
    output = method.predict(model, inputs)
    for m, weight in zip(splits.modalities, method.head.weights):
        x = output.features[m]
        cosine = (x @ weight.T) / (x.norm(dim=1, keepdim=True) * weight.norm(dim=1))
        torch.testing.assert_close(output.modality_logits[m], scale * cosine)
        assert float(output.modality_logits[m].detach().abs().max()) <= scale + 1e-5
    torch.testing.assert_close(output.logits, sum(output.modality_logits.values()))
    stretched = method.head([3.0 * output.features[m] for m in splits.modalities])
    torch.testing.assert_close(stretched.logits, output.logits)


def test_mmcosine_refuses_heads_that_are_not_linear_and_a_bad_scale():
    with pytest.raises(ConfigError, match="concat or sum"):
        setup("mmcosine", fusion="film")
    with pytest.raises(ConfigError, match="scale"):
        setup("mmcosine", {"scale": 0.0})


# ---------------------------------------------------------------- end to end

SMALL_CNN = {"acc": {"channels": 8, "layers": 2}, "gyro": {"channels": 8, "layers": 2}}
DATASETS = {
    "basicmotions": ({}, SMALL_CNN, "acc"),
    "synthetic3": ({"strengths": [2.5, 1.0, 0.8], "train_size": 96, "test_size": 32}, {}, "m1"),
}
METHODS = ["unimodal", "ogm", "ogm_ge", "mmcosine", "pmr", "agm", "joint+ogm", "erlmr+ogm_ge"]


@pytest.mark.parametrize("dataset", list(DATASETS))
@pytest.mark.parametrize("method", METHODS)
def test_trains_two_epochs(method, dataset, tmp_path):
    data_options, encoder_options, modality = DATASETS[dataset]
    options = {"modality": modality} if method == "unimodal" else {}
    result = erlmr.train({
        "data": {"dataset": dataset.rstrip("3"), "options": data_options},
        "model": {"encoder_options": encoder_options},
        "method": {"name": method, "options": options},
        "train": {"epochs": 2, "batch_size": 16, "quiet": True, "run_dir": str(tmp_path / "run")},
    })
    assert 0 <= result.summary["test"]["accuracy"] <= 1
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [0, 1]
    assert all(math.isfinite(r["train_loss"]) for r in records)
    modulator = method.split("+")[-1]
    if modulator in ("ogm", "ogm_ge", "agm"):
        logged = records[-1]["method"]
        assert {f"{modulator}_coefficient_{m}" for m in result.summary["modalities"]} <= set(logged)
