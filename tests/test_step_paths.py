"""The lean ERL-MR step and the training-step options: Gram-matrix solver, bf16 autocast, torch.compile."""
import pytest
import torch
import torch.nn.functional as F

from erlmr import min_norm_weights
from erlmr.nn.pareto import min_norm_weights_from_gram
from erlmr.training.trainer import Trainer
from support import take_step


def small_trainer(run_config, method="erlmr", options=None, train=None):
    config = run_config(method={"name": method, "options": options or {}}, train=train or {})
    config["data"] = {"dataset": "synthetic", "options": {"train_size": 64, "test_size": 32}}
    config["model"] = {"euler_dropout": 0.0}
    return Trainer(config)


@pytest.mark.parametrize("normalization", ["none", "l2", "loss", "loss+"])
def test_the_gram_matrix_alone_gives_the_same_weights(normalization):
    generator = torch.Generator().manual_seed(0)
    grads = torch.randn(2, 50, generator=generator) * torch.tensor([[3.0], [0.01]])
    losses = torch.tensor([0.7, 2.0])
    gram = grads.double() @ grads.double().T
    torch.testing.assert_close(
        min_norm_weights_from_gram(gram, losses, normalization), min_norm_weights(grads, losses, normalization)
    )


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


def test_params_mode_stays_exact_when_one_gradient_is_ten_thousand_times_smaller(run_config):
    """The Gram matrix comes from norms of unit gradients (polarisation); it must not lose the small one."""
    trainer = small_trainer(
        run_config, options={"normalization": "none", "weight_floor": 0.0, "phase_weight": 1e-6, "modality_ce_weight": 1e-6}
    )
    trainer.model.eval()
    inputs, labels = trainer.splits.train.__getitems__(list(range(32)))
    g_fusion, g_mmc = each_loss_gradient(trainer, inputs, labels)
    shared = {id(p) for p in trainer.model.shared_parameters()}
    flat = [torch.cat([g.flatten() for g, p in zip(gs, trainer.model.parameters()) if id(p) in shared]) for gs in (g_fusion, g_mmc)]
    assert flat[1].norm() < 1e-4 * flat[0].norm()
    trainer.model.zero_grad(set_to_none=True)
    take_step(trainer.method, trainer.model, inputs, labels)
    w = trainer.method.last_weights
    torch.testing.assert_close(w, min_norm_weights(flat), rtol=1e-5, atol=1e-7)
    assert w[1] > 0.99  # the min-norm point sits next to the tiny gradient
    for p, a, b in zip(trainer.model.parameters(), g_fusion, g_mmc):
        torch.testing.assert_close(p.grad, w[0] * a + w[1] * b, rtol=1e-4, atol=1e-9)


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


def test_compile_option_compiles_the_model_that_training_steps_use(run_config, monkeypatch):
    compiled = []
    monkeypatch.setattr(torch, "compile", lambda model: compiled.append(model) or torch.nn.Identity())
    small_trainer(run_config, method="joint")
    assert compiled == []
    trainer = small_trainer(run_config, method="joint", train={"compile": True})
    assert compiled == [trainer.model] and isinstance(trainer.step_model, torch.nn.Identity)
