"""The one-call balanced step: what a user's own loop gets equals the trainer's ERL-MR step."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from erlmr.errors import ConfigError
from erlmr.nn import balanced_backward, min_norm_weights
from support import one_batch, small_trainer, take_step


def user_losses(model, method, inputs, labels):
    """The fusion CE and the MMC loss as a user's loop would write them with the drop-in pieces."""
    output = model(inputs)
    order = model.modalities
    mmc = method.mmc([output.phases[m] for m in order], [output.modality_logits[m] for m in order], labels)
    return [F.cross_entropy(output.logits, labels), mmc], output


@pytest.mark.parametrize("mode", ["params", "features"])
def test_one_call_equals_the_trainers_erlmr_step_gradient_for_gradient(run_config, mode):
    trainer = small_trainer(run_config, options={"pareto_mode": mode})
    model, method = trainer.model.eval(), trainer.method
    inputs, labels = one_batch(trainer)
    take_step(method, model, inputs, labels)
    trainers = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    losses, output = user_losses(model, method, inputs, labels)
    features = [output.features[m] for m in model.modalities] if mode == "features" else None
    weights = balanced_backward(losses, model.parameters(), shared=model.shared_parameters(), features=features)
    torch.testing.assert_close(weights, method.last_weights)
    for p, expected in zip(model.parameters(), trainers):
        torch.testing.assert_close(p.grad, expected)


def test_three_losses_get_the_min_norm_weights_of_their_gradients():
    torch.manual_seed(0)
    layer = torch.nn.Linear(6, 3)
    x = torch.randn(16, 6)
    losses = [layer(x)[:, i].square().mean() for i in range(3)]
    grads = [
        torch.cat([g.flatten() for g in torch.autograd.grad(loss, layer.parameters(), retain_graph=True)])
        for loss in losses
    ]
    weights = balanced_backward(losses, layer.parameters(), normalization="none", weight_floor=0.0)
    torch.testing.assert_close(weights, min_norm_weights(grads), rtol=1e-4, atol=1e-5)
    combined = sum(w * g for w, g in zip(weights, grads))
    torch.testing.assert_close(
        torch.cat([p.grad.flatten() for p in layer.parameters()]), combined, rtol=1e-4, atol=1e-6
    )


def test_the_floor_keeps_both_losses_alive_and_bad_calls_are_clear():
    layer = torch.nn.Linear(2, 1)
    x = torch.randn(4, 2)
    same = layer(x).mean()
    weights = balanced_backward(
        [same, 100 * layer(x).mean()], layer.parameters(), normalization="none", weight_floor=0.1
    )
    assert float(weights.min()) == pytest.approx(0.1)
    with pytest.raises(ConfigError, match="two or more losses"):
        balanced_backward([same], layer.parameters())
