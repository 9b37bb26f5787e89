"""bf16 autocast and torch.compile of the training step."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from support import small_trainer


def reference_gradients(model, losses_fn, inputs, labels):
    """Each loss's gradient on every parameter, from separate forward passes (no tricks)."""
    grads = []
    for index in range(2):
        model.zero_grad()
        losses_fn(model(inputs), labels)[index].backward()
        grads.append([p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in model.parameters()])
    return grads


def erlmr_losses(method):
    def losses(output, labels):
        order = list(output.modality_logits)
        mmc = method.mmc([output.phases[m] for m in order], [output.modality_logits[m] for m in order], labels)
        return F.cross_entropy(output.logits, labels), mmc

    return losses


def each_loss_gradient(trainer, inputs, labels):
    model, method = trainer.model, trainer.method
    grads = []
    for index in range(2):
        model.zero_grad(set_to_none=True)
        output = model(inputs)
        order = model.modalities
        mmc = method.mmc([output.phases[m] for m in order], [output.modality_logits[m] for m in order], labels)
        (F.cross_entropy(output.logits, labels), mmc)[index].backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    return grads


def test_amp_runs_training_steps_in_bfloat16_and_evaluation_in_float32(run_config):
    trainer = small_trainer(run_config, method="joint", train={"amp": True, "device": "cpu", "epochs": 1})
    dtypes = {"train": set(), "eval": set()}
    first_layer = trainer.model.encoders["m0"].net[0]
    assert isinstance(first_layer, torch.nn.Linear)
    first_layer.register_forward_hook(lambda module, args, output: dtypes["train" if module.training else "eval"].add(output.dtype))
    result = trainer.run()
    assert dtypes == {"train": {torch.bfloat16}, "eval": {torch.float32}}
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
    assert 0 <= result.summary["test"]["accuracy"] <= 1


def test_amp_is_off_by_default_on_cpu(run_config):
    assert small_trainer(run_config, method="joint", train={"device": "cpu"}).amp is False
