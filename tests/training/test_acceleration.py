"""bf16 autocast and torch.compile of the training step."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from erlmr.config import ModelConfig
from erlmr.data import DatasetSplits, Split
from erlmr.errors import ConfigError
from erlmr.methods import MethodContext, build_method
from erlmr.methods.erlmr import ERLMR
from erlmr.nn.balance import solve, solve_on_device
from erlmr.nn.pareto import NORMALIZATIONS
from erlmr.training.acceleration import CompiledModel, autocast, check_cuda_graphs, compile_step, memory_format
from erlmr.training.builders import ModelSpec, build_model
from erlmr.training.step import method_step
from support import one_batch, small_trainer, step_context


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
    first_layer.register_forward_hook(
        lambda module, args, output: dtypes["train" if module.training else "eval"].add(output.dtype)
    )
    result = trainer.run()
    assert dtypes == {"train": {torch.bfloat16}, "eval": {torch.float32}}
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
    assert 0 <= result.summary["test"]["accuracy"] <= 1


def test_amp_is_off_by_default_on_cpu(run_config):
    assert small_trainer(run_config, method="joint", train={"device": "cpu"}).amp is False


# ------------------------------------------------------------------------------ the compiled step
def step_gradients(method, model, step_model, inputs, labels):
    """One step's weights and every parameter's gradient, through ``step_model``."""
    step = step_context(method, model)
    step.optimizer.zero_grad(set_to_none=True)
    method_step(method, model, inputs, labels, step, step_model)
    return method.last_weights.clone(), [p.grad.clone() for p in model.parameters()]


def test_the_compiled_step_gives_the_eager_weights_and_gradients_in_both_pareto_modes(run_config):
    # aot_eager: dynamo's graphs and AOTAutograd's backward, as inductor gets them, without its code generation
    for mode in ("params", "features"):
        trainer = small_trainer(run_config, options={"pareto_mode": mode})
        model, method = trainer.model.eval(), trainer.method
        inputs, labels = one_batch(trainer)
        eager_weights, eager_grads = step_gradients(method, model, model, inputs, labels)
        compiled = compile_step(model, method, True, backend="aot_eager")
        assert isinstance(compiled, CompiledModel) and compiled.modalities == model.modalities
        weights, grads = step_gradients(method, model, compiled, inputs, labels)
        torch.testing.assert_close(weights, eager_weights, rtol=1e-5, atol=1e-7)
        assert abs(float(weights[0]) - 0.5) > 1e-3  # a weight actually solved, not the fallback of a zero Gram matrix
        for grad, expected in zip(grads, eager_grads):
            torch.testing.assert_close(grad, expected, rtol=1e-5, atol=1e-7)


def test_train_compile_compiles_the_model_in_two_regions_and_erlmrs_losses(run_config):
    plain = small_trainer(run_config)
    assert plain.step_model is plain.model and plain.method.losses.__func__ is ERLMR.losses
    trainer = small_trainer(run_config, train={"compile": True})
    assert isinstance(trainer.step_model, CompiledModel) and trainer.step_model.model is trainer.model
    assert getattr(trainer.method.losses, "__func__", None) is not ERLMR.losses  # replaced by its compiled form


# ---------------------------------------------------------------------------- CUDA-graph capture
def test_cuda_graphs_are_refused_with_a_reason_where_they_cannot_apply(run_config):
    with pytest.raises(ConfigError, match="needs a CUDA device"):
        small_trainer(run_config, train={"cuda_graphs": True, "device": "cpu"})
    cuda = torch.device("cuda")
    ogm = small_trainer(run_config, method="ogm_ge").method
    with pytest.raises(ConfigError, match="OGMGE keeps Python state"):
        check_cuda_graphs(ogm, cuda, 1)
    erlmr = small_trainer(run_config).method
    with pytest.raises(ConfigError, match="for one process"):
        check_cuda_graphs(erlmr, cuda, 2)
    check_cuda_graphs(erlmr, cuda, 1)


def device_solved_step(trainer, mode, on_device):
    model, method = trainer.model.eval(), trainer.method
    method.options.pareto_mode = mode
    step = step_context(method, model)
    step.device_solve = on_device
    step.optimizer.zero_grad(set_to_none=True)
    inputs, labels = one_batch(trainer)
    result = method_step(method, model, inputs, labels, step)
    return method.last_weights.clone(), [p.grad.clone() for p in model.parameters()], result.loss


def test_the_device_solve_of_a_captured_step_gives_the_host_solve(run_config):
    trainer = small_trainer(run_config)
    for mode in ("params", "features"):
        host = device_solved_step(trainer, mode, False)
        device = device_solved_step(trainer, mode, True)
        # params mode forms the Gram matrix from dot products instead of the polarisation identity: equal to rounding
        torch.testing.assert_close(device[0], host[0], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(device[2], host[2], rtol=1e-5, atol=1e-6)
        for grad, expected in zip(device[1], host[1]):
            torch.testing.assert_close(grad, expected, rtol=1e-4, atol=1e-6)


def test_solve_on_device_is_the_host_solve_for_every_normalization_and_edge():
    generator = torch.Generator().manual_seed(0)
    cases = []
    for _ in range(20):
        g = torch.randn(2, 5, generator=generator, dtype=torch.float64)
        cases.append(g @ g.T)
    aligned = torch.tensor([1.0, 2.0], dtype=torch.float64)
    cases += [torch.outer(aligned, aligned), torch.eye(2, dtype=torch.float64), torch.tensor([[1.0, 5.0], [5.0, 30.0]])]
    for gram in cases:
        losses = torch.rand(2, generator=generator, dtype=torch.float64) + 0.1
        for normalization in NORMALIZATIONS:
            for floor in (0.0, 0.001, 0.2):
                host = solve(gram.tolist(), losses.tolist(), normalization, floor)
                torch.testing.assert_close(
                    solve_on_device(gram, losses, normalization, floor), host, rtol=1e-6, atol=1e-7
                )
    with pytest.raises(ConfigError, match="unknown gradient normalization"):
        solve_on_device(cases[0], losses, "l1", 0.001)


# ------------------------------------------------------------------------ ResNet-18: layout, bf16
def resnet_model(channels_last: bool):
    spec = ModelSpec(["a", "v"], {"a": (1, 40, 36), "v": (3, 2, 32, 32)}, {"a": "resnet18", "v": "resnet18"}, 4, True)
    torch.manual_seed(0)
    config = ModelConfig(encoder_options={"a": {"width": 8}, "v": {"width": 8}}, euler_dim=16, euler_dropout=0.0)
    return memory_format(build_model(config, spec), channels_last)


def resnet_batch():
    generator = torch.Generator().manual_seed(1)
    inputs = {
        "a": torch.randn(4, 1, 40, 36, generator=generator),
        "v": torch.randn(4, 3, 2, 32, 32, generator=generator),
    }
    return inputs, torch.tensor([0, 1, 2, 3])


def test_channels_last_resnet18_gives_the_same_outputs_and_gradients():
    inputs, labels = resnet_batch()
    results = []
    for channels_last in (False, True):
        model = resnet_model(channels_last)
        first_conv = model.encoders["v"].trunk[0].weight  # (8, 3, 7, 7): the two layouts differ
        assert (
            first_conv.is_contiguous(memory_format=torch.channels_last) == channels_last != first_conv.is_contiguous()
        )
        output = model(inputs)
        F.cross_entropy(output.logits, labels).backward()
        results.append((output.logits.detach(), [p.grad for p in model.parameters()]))
    torch.testing.assert_close(results[1][0], results[0][0], rtol=1e-4, atol=1e-5)
    for grad, expected in zip(results[1][1], results[0][1]):
        torch.testing.assert_close(grad, expected, rtol=1e-3, atol=1e-4)


def test_a_bf16_erlmr_step_on_resnet18_runs_in_bf16_with_float32_weights_and_finite_gradients():
    inputs, labels = resnet_batch()
    model = resnet_model(channels_last=True)
    splits = DatasetSplits(
        "resnet",
        ["a", "v"],
        ["0", "1", "2", "3"],
        Split(inputs, labels),
        Split(inputs, labels),
        Split(inputs, labels),
        {},
    )
    method = build_method(
        "erlmr", {"pareto_mode": "features"}, model, MethodContext(["a", "v"], 4, 4, torch.device("cpu"), splits)
    )
    step = step_context(method, model)
    with autocast(torch.device("cpu"), True):
        result = method_step(method, model, inputs, labels, step)
    assert {x.dtype for x in result.output.encoded.values()} == {torch.bfloat16}  # the ResNets ran in bf16
    assert all(p.dtype == torch.float32 and p.grad.dtype == torch.float32 for p in model.parameters())
    assert all(bool(torch.isfinite(p.grad).all()) for p in model.parameters())
    assert 0 < float(method.last_weights[0]) < 1 and bool(torch.isfinite(result.loss))
