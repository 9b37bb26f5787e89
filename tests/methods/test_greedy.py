"""Greedy: learning speeds against a hand computation, when re-balancing starts and ends, and that it
cuts the cross-modal flow into the caring modality."""

from __future__ import annotations

import math

import pytest
import torch

from erlmr.errors import ConfigError
from support import first_batch, method_setup, setup_three, take_step


def squared(tensors) -> float:
    return sum(float((t.detach().double() ** 2).sum()) for t in tensors)


def at_epoch(method, model, epoch: int):
    method.on_epoch_start(model, epoch)
    return method


def test_the_learning_speeds_are_ratios_of_gradient_to_weight_norms_of_each_group():
    splits, model, method, _ = method_setup("greedy")
    inputs, labels = first_batch(splits)
    take_step(at_epoch(method, model, 0), model, inputs, labels)
    shared = list(method.mmtm.squeeze.parameters())
    for i, m in enumerate(model.modalities):
        bypass = [*method.mmtm.excite[i].parameters(), *shared]
        main = list(model.encoders[m].parameters())
        expected_bypass = squared(p.grad for p in bypass) / squared(bypass)
        expected_main = squared(p.grad for p in main) / squared(main)
        assert float(method.speed_sums[0, i]) == pytest.approx(expected_bypass, rel=1e-4)
        assert float(method.speed_sums[1, i]) == pytest.approx(expected_main, rel=1e-4)
    assert not method.speed_sums.requires_grad  # a state, not a graph that grows with every step
    ratios = method.balance_ratios()
    assert float(ratios[0]) == pytest.approx(
        math.log10(float(method.speed_sums[0, 0] / method.speed_sums[1, 0])), rel=1e-5
    )


def biased_towards_first(method):
    """Running sums in which modality 0 learns far more through the MMTM than modality 1."""
    method.speed_sums.copy_(torch.tensor([[10.0, 1.0], [1.0, 1.0]]))


def test_a_large_speed_gap_starts_a_window_that_cuts_the_flow_into_the_caring_modality():
    splits, model, method, _ = method_setup("greedy")
    inputs, labels = first_batch(splits)
    noisy = {**inputs, "m1": torch.randn_like(inputs["m1"])}
    before = take_step(at_epoch(method, model, 0), model, noisy, labels).output.encoded["m0"]
    assert not bool(method.curating)  # epoch 0 comes before the starting epoch
    at_epoch(method, model, 1)
    biased_towards_first(method)
    first = take_step(method, model, inputs, labels).output.encoded["m0"]
    assert not torch.allclose(first, before)  # not re-balancing yet: m1's input reaches m0's features
    assert bool(method.curating) and int(method.caring) == 0
    sums = method.speed_sums.clone()
    curated = take_step(method, model, inputs, labels).output.encoded["m0"]
    # Re-balancing: m0's channels are scaled by its running-mean excitation, a constant of the batch.
    with torch.no_grad():
        torch.testing.assert_close(curated, model.encoders["m0"](inputs["m0"]) * method.mean_excitations()[0])
        clean, shaken = (method.forward_pass(model, x, caring=0).encoded["m0"] for x in (inputs, noisy))
    torch.testing.assert_close(clean, shaken)  # nothing of m1 reaches m0
    torch.testing.assert_close(method.speed_sums, sums)  # and the speeds are not accumulated


def test_the_window_ends_after_its_steps():
    splits, model, method, _ = method_setup("greedy", {"window": 3, "epsilon": 1e9})
    inputs, labels = first_batch(splits)
    at_epoch(method, model, 1)
    method.curating.fill_(True)
    logs = [take_step(method, model, inputs, labels).logs["greedy_curated_m0"] for _ in range(4)]
    assert [float(x) for x in logs] == [1, 1, 1, 0]
    assert not bool(method.curating)


@pytest.mark.parametrize("options, epoch", [({"epsilon": 1e9}, 1), ({}, 0)])
def test_no_window_with_an_infinite_threshold_or_before_the_starting_epoch(options, epoch):
    splits, model, method, _ = method_setup("greedy", options)
    inputs, labels = first_batch(splits)
    at_epoch(method, model, epoch)
    biased_towards_first(method)
    take_step(method, model, inputs, labels)
    assert not bool(method.curating)


def test_each_modality_keeps_the_running_mean_of_its_own_excitation():
    splits, model, method = setup_three("greedy")
    inputs, labels = first_batch(splits)
    batches = [{m: x[:16] for m, x in inputs.items()}, {m: x[16:] for m, x in inputs.items()}]
    means = []
    for batch in batches:
        with torch.no_grad():
            encoded, size = model.encode(batch)
            means.append([e.mean(0) for e in method.mmtm(method.squeezes(encoded, size))])
        take_step(method, model, batch, labels[:16])
    for i, mean in enumerate(method.mean_excitations()):
        torch.testing.assert_close(mean, (means[0][i] + means[1][i]) / 2)
    assert int(method.excitation_batches) == 2


def test_predict_is_the_mean_of_the_modality_logits_after_the_mmtm():
    splits, model, method = setup_three("greedy")
    inputs, _ = first_batch(splits, 8)
    with torch.no_grad():
        output = method.predict(model, inputs)
        excited = method.forward_pass(model, inputs)
        plain = model(inputs)
    torch.testing.assert_close(output.logits, torch.stack(list(excited.modality_logits.values())).mean(0))
    assert not torch.allclose(output.logits, plain.logits / 3)  # the MMTM is part of the prediction


def test_utilisation_is_zero_without_cross_modal_flow():
    splits, model, method = setup_three("greedy", {"utilisation": True})
    with torch.no_grad():
        for layer in method.mmtm.excite:
            layer.weight.mul_(20)
    flowing = method.on_epoch_end(model, 0)
    assert set(flowing) == {f"greedy_{name}_{m}" for name in ("bdr", "utilisation") for m in model.modalities}
    flowing = {k: v for k, v in flowing.items() if "utilisation" in k}
    assert any(abs(u) > 0 for u in flowing.values())
    with torch.no_grad():
        for layer in method.mmtm.excite:
            layer.weight.zero_()  # every excitation is a constant: nothing flows between modalities
    still = method.utilisation(model, splits.train, splits.val)
    assert still == {f"greedy_utilisation_{m}": 0.0 for m in model.modalities}


def test_heads_whose_modality_logits_do_not_add_up_are_refused():
    with pytest.raises(ConfigError, match="greedy.*concat or sum"):
        method_setup("greedy", fusion="film")
