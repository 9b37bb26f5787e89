"""ARM: MI/CMI contribution scores rescale each modality's feature before fusion; labels never at test time."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from erlmr.config import ModelConfig
from erlmr.errors import ConfigError
from erlmr.methods.arm import normalized_conditional_mutual_information, normalized_mutual_information
from support import first_batch, method_setup, setup_three, take_step


def numpy_nmi(x: torch.Tensor, y: torch.Tensor, bins: int) -> float:
    """``2·I/(H_x + H_y)`` from numpy's own 2-D histogram (an independent estimate)."""
    joint, _, _ = np.histogram2d(x.flatten().numpy(), y.flatten().numpy(), bins=bins)
    p = joint / joint.sum()

    def h(q):
        q = q[q > 0]
        return float(-(q * np.log(q)).sum())

    hx, hy = h(p.sum(1)), h(p.sum(0))
    return 2 * (hx + hy - h(p)) / (hx + hy)


def test_arm_mutual_information_estimators():
    generator = torch.Generator().manual_seed(0)
    a, b = torch.randn(4000, generator=generator), torch.randn(4000, generator=generator)
    assert float(normalized_mutual_information(a, a, 30)) == pytest.approx(1.0)
    assert float(normalized_mutual_information(a, b, 30)) < 0.05
    assert float(normalized_mutual_information(a, a + 0.5 * b, 30)) == pytest.approx(numpy_nmi(a, a + 0.5 * b, 30))
    x, y = (torch.randint(0, 2, (4000,), generator=generator).double() for _ in range(2))
    # I(X;Y|X) = 0; with Z = X xor Y, I(X;Y|Z) = ln 2 = H(X|Z) = H(Y|Z), so the normalised value is ½.
    # (The official formula gives 0.50 and 0.75 on these.)
    assert float(normalized_conditional_mutual_information(x, y, [x], 2)) == pytest.approx(0.0, abs=1e-12)
    xor = (x != y).double()
    assert float(normalized_conditional_mutual_information(x, y, [xor], 2)) == pytest.approx(0.5, abs=1e-3)


def expected_ratios(method, features, labels, own: bool) -> torch.Tensor:
    """The ratios written out from the description: scores from numpy NMI and the corrected NCMI."""
    with torch.no_grad():
        fused = method.fuse(torch.cat(features, 1))
        p = [method.classifier(x).softmax(1)[torch.arange(len(labels)), labels].mean() for x in (fused, *features)]
    scores = []
    for m, z in enumerate(features):
        nmi = numpy_nmi(z, fused, 30)
        others = features[:m] + features[m + 1 :]
        ncmi = float(normalized_conditional_mutual_information(z, fused, others, 2))
        weight = p[1 + m] if own else sum(p[1 + j] for j in range(len(features)) if j != m) / (len(features) - 1)
        scores.append(max(float(p[0]) * nmi + float(weight) * (nmi - ncmi), 1e-6))
    scores = torch.tensor(scores)
    return (scores.sum() - scores) / (len(scores) - 1) / scores


def dominate_the_fused_feature(method, count: int) -> None:
    """Fusion weights that make the fused feature element-wise mostly modality 0's."""
    width = method.fuse.out_features
    blocks = [torch.eye(width)] + [0.1 * torch.eye(width)] * (count - 1)
    with torch.no_grad():
        method.fuse.weight.copy_(torch.cat(blocks, 1))


@pytest.mark.parametrize("three,own", [(False, False), (False, True), (True, False)])
def test_arm_fuses_with_the_contribution_ratios_and_trains_through_them(three, own):
    options = {"interaction_confidence": "own" if own else "others"}
    if three:
        splits, model, method = setup_three("arm", options)
    else:
        splits, model, method, _ = method_setup("arm", options)
    inputs, labels = first_batch(splits)
    dominate_the_fused_feature(method, len(splits.modalities))
    twin, twin_method = copy.deepcopy(model), copy.deepcopy(method)
    features = [f.detach() for f in model(inputs).features.values()]
    ratios = expected_ratios(method, features, labels, own)
    assert ratios[0] == ratios.min() and ratios[0] < 1 < ratios.max(), "the dominant modality attenuated"
    result = take_step(method, model, inputs, labels)
    logged = torch.stack([result.logs[f"arm_ratio_{m}"] for m in splits.modalities])
    torch.testing.assert_close(logged, ratios.float(), rtol=1e-4, atol=1e-6)
    # The loss is CE(f(F([r·z]))) with the ratios as constants: same gradients as a plain backward of that.
    twin_features = list(twin(inputs).features.values())
    scaled = torch.cat([r * z for r, z in zip(logged, twin_features)], 1)
    logits = twin_method.classifier(twin_method.fuse(scaled))
    F.cross_entropy(logits, labels).backward()
    torch.testing.assert_close(result.output.logits, logits.detach())
    plain = twin_method.classifier(twin_method.fuse(torch.cat(twin_features, 1)))
    assert (plain - logits).abs().max() > 1e-2 * logits.abs().max(), "ratios of 1 would give other logits"
    for (name, p), q in zip(model.named_parameters(), twin.parameters()):
        if q.grad is not None:
            torch.testing.assert_close(p.grad, q.grad, msg=name)
    torch.testing.assert_close(method.fuse.weight.grad, twin_method.fuse.weight.grad)


def test_arm_predicts_without_labels_from_the_stored_training_ratios():
    splits, model, method, _ = method_setup("arm")
    dominate_the_fused_feature(method, 2)
    inputs, labels = first_batch(splits)
    steps = [take_step(method, model, inputs, labels) for _ in range(2)]
    mean = torch.stack([torch.stack([s.logs[f"arm_ratio_{m}"] for m in splits.modalities]) for s in steps]).mean(0)
    logs = method.on_epoch_end(model, 0)
    torch.testing.assert_close(method.test_ratios, mean)
    assert (mean - 1).abs().min() > 0.1
    assert logs["arm_test_ratio_m0"] == pytest.approx(float(mean[0]))
    assert int(method.ratio_steps) == 0
    model.eval()
    with torch.no_grad():
        batch = method.predict(model, inputs).logits
        alone = method.predict(model, {m: x[3:4] for m, x in inputs.items()}).logits
        features = list(model(inputs).features.values())
        expected = method.classifier(method.fuse(torch.cat([r * z for r, z in zip(mean, features)], 1)))
    torch.testing.assert_close(alone[0], batch[3], rtol=1e-5, atol=1e-9)  # independent of the batch
    torch.testing.assert_close(batch, expected, rtol=1e-5, atol=1e-9)


def test_arm_needs_equal_feature_widths():
    widths = ModelConfig(encoder_options={"m0": {"hidden": 16}, "m1": {"hidden": 8}, "m2": {"hidden": 16}})
    with pytest.raises(ConfigError, match="feature widths must match.*m1.*8"):
        setup_three("arm", model_config=widths)


def test_arm_scores_stay_positive_and_finite_on_constant_features():
    _, _, method, _ = method_setup("arm")
    zeros = torch.zeros(8, 16)
    scores = method.contribution_scores([zeros, zeros + 1], torch.zeros(8, dtype=torch.long))
    assert torch.isfinite(scores).all() and (scores >= 1e-6).all()
    assert not math.isnan(float(normalized_mutual_information(zeros, zeros, 30)))


def test_arm_official_initialisation_on_request():
    _, _, method, _ = method_setup("arm", {"init_std": 0.01})
    for layer in (method.fuse, method.classifier):
        assert float(layer.weight.detach().std()) == pytest.approx(0.01, rel=0.3) and not layer.bias.any()
