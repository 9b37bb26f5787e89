"""erlmr.lightning.BalancedModule: any method's step through Lightning equals erlmr's own step, training on
BasicMotions logs erlmr's validation metrics, and a run resumed from Lightning's checkpoint ends exactly
where the uninterrupted run does."""

from __future__ import annotations

import copy
import sys

import lightning.pytorch as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn

from erlmr.analysis.evaluation import evaluate, imbalance_report
from erlmr.data import load_dataset
from erlmr.errors import ConfigError, DataError, MissingDependencyError
from erlmr.lightning import BalancedModule, ImbalanceCallback, split_loader
from erlmr.methods import METHODS
from erlmr.training.builders import build_optimizer, trainable_parameters
from erlmr.training.step import StepContext, method_step

SMALL_CNN = {"acc": {"channels": 8, "layers": 2}, "gyro": {"channels": 8, "layers": 2}}
CPU = torch.device("cpu")


def trainer(root, epochs: int, **options) -> L.Trainer:
    quiet = {
        "logger": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "enable_checkpointing": False,
    }
    return L.Trainer(max_epochs=epochs, accelerator="cpu", default_root_dir=root, **{**quiet, **options})


@pytest.fixture(scope="module")
def basicmotions():
    return load_dataset("basicmotions", None, 0, 0.2, {})


@pytest.fixture(scope="module")
def three():
    return load_dataset("synthetic", None, 0, 0.25, {"strengths": [2.5, 1.0, 0.8], "train_size": 32, "test_size": 8})


def basicmotions_module(splits, method="erlmr", options=None) -> BalancedModule:
    return BalancedModule(
        {"acc": "cnn1d", "gyro": "cnn1d"},
        splits.num_classes,
        method,
        options,
        model={"encoder_options": SMALL_CNN},
        optim={"name": "adam", "lr": 0.003},
        splits=splits,
    )


def test_trains_two_epochs_on_basicmotions_and_logs_erlmrs_validation_metrics(basicmotions, tmp_path):
    splits = basicmotions
    L.seed_everything(0)
    module = basicmotions_module(splits, "erlmr+ogm_ge")
    initial = copy.deepcopy(module.state_dict())
    fit = trainer(tmp_path, 2, callbacks=[ImbalanceCallback()])
    fit.fit(module, split_loader(splits.train, 16, shuffle=True), split_loader(splits.val, 16))
    assert fit.current_epoch == 2 and fit.global_step == 2 * -(-len(splits.train) // 16)
    assert not torch.equal(
        initial["model.encoders.acc.net.0.weight"], module.state_dict()["model.encoders.acc.net.0.weight"]
    )
    logged = {k: float(v) for k, v in fit.callback_metrics.items()}
    # The numbers erlmr's own evaluation gives for the trained model on the validation split.
    val = evaluate(module.model, module.method, splits.val, 16, CPU)
    imbalance = imbalance_report(module.model, module.method, splits.val, 16, CPU)
    assert logged["val_accuracy"] == pytest.approx(val["accuracy"]) and logged["val_loss"] == pytest.approx(
        val["loss"], rel=1e-5
    )
    assert logged["val_macro_f1"] == pytest.approx(val["macro_f1"], abs=1e-6)
    assert logged["val_imbalance_degree"] == pytest.approx(imbalance["imbalance_degree"], abs=1e-6)
    for m in splits.modalities:
        assert logged[f"val_modality_accuracy/{m}"] == pytest.approx(val["modality_accuracy"][m])
        assert logged[f"val_contribution/{m}"] == pytest.approx(imbalance["contribution"][m], abs=1e-6)
        assert logged[f"val_missing_modality_accuracy/{m}"] == pytest.approx(imbalance["missing_modality_accuracy"][m])
        # The callback's diagnose of the same module agrees with the module's own tally.
        assert logged[f"diagnose/contribution/{m}"] == pytest.approx(logged[f"val_contribution/{m}"], abs=1e-6)
        assert f"method/ogm_ge_coefficient_{m}" in logged
    assert {"train_loss", "train_accuracy", "method/pareto_weight_fusion"} <= set(logged)


def assert_same_state(expected: nn.Module, got: nn.Module) -> None:
    """Every weight and state bit for bit (a method's extra state, e.g. a generator's, compared as it is)."""
    want, have = expected.state_dict(), got.state_dict()
    assert want.keys() == have.keys()
    differ = [k for k in want if not same(want[k], have[k])]
    assert not differ, f"these entries differ: {differ[:5]}"


def same(a, b) -> bool:
    if torch.is_tensor(a):
        return torch.is_tensor(b) and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def fit_resumable(splits, root, method, options, epochs: int, ckpt_path=None, seed: int = 0) -> BalancedModule:
    L.seed_everything(seed)
    module = basicmotions_module(splits, method, options)
    saving = ModelCheckpoint(dirpath=root, save_last=True)
    fit = trainer(root, epochs, enable_checkpointing=True, callbacks=[saving], num_sanity_val_steps=0)
    fit.fit(module, split_loader(splits.train, 16, shuffle=True), split_loader(splits.val, 16), ckpt_path=ckpt_path)
    return module


# erlmr: Euler dropout and a shuffled order, both from the RNG; reconboost with one-epoch stages: a learnable rate
# in the method (so in the optimiser), a declared state, and an optimiser-state reset in the resumed epoch.
@pytest.mark.parametrize("method, options", [("erlmr", {}), ("reconboost", {"stage_epochs": 1, "rectify_epochs": 0})])
def test_resuming_from_lightnings_checkpoint_ends_exactly_where_the_uninterrupted_run_does(
    basicmotions, tmp_path, method, options
):
    whole = fit_resumable(basicmotions, tmp_path / "whole", method, options, epochs=2)
    fit_resumable(basicmotions, tmp_path / "cut", method, options, epochs=1)
    checkpoint = torch.load(tmp_path / "cut" / "last.ckpt", weights_only=True)  # loads as Lightning's default does
    assert {f"method.{key}" for key in whole.method.state_dict()} <= set(
        checkpoint["state_dict"]
    ) and "erlmr_rng" in checkpoint
    # Another seed and fresh weights: everything the second epoch depends on must come from the checkpoint.
    resumed = fit_resumable(
        basicmotions, tmp_path / "cut", method, options, epochs=2, ckpt_path=tmp_path / "cut" / "last.ckpt", seed=7
    )
    assert_same_state(whole, resumed)


class EpochSeeds(L.Callback):
    """Seeds the global RNG before every epoch hook and every step, as the reference loop below does."""

    def on_train_epoch_start(self, trainer, pl_module):
        torch.manual_seed(100 + trainer.current_epoch)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        torch.manual_seed(batch_idx)


def reference_run(module: BalancedModule, loader, epochs: int) -> int:
    """erlmr's own step context and method_step on ``module``'s model and method, as its trainer takes them."""
    model, method = module.model, module.method
    params = trainable_parameters(model, method)
    optimizer = build_optimizer(module.config, params)
    steps = 0
    for epoch in range(epochs):
        model.train(), method.train()
        torch.manual_seed(100 + epoch)
        method.on_epoch_start(model, epoch)
        for index, (inputs, labels) in enumerate(loader):
            torch.manual_seed(index)
            optimizer.zero_grad(set_to_none=True)
            step = StepContext(optimizer, params, epoch, index, len(loader))
            method_step(method, model, inputs, labels, step)
            step.finish()
            steps += step.optimizer_steps
        method.on_epoch_end(model, epoch)
    return steps


NAMES = [*METHODS, "erlmr+ogm_ge", "joint+cggm"]


@pytest.mark.parametrize("name", NAMES)
def test_every_methods_lightning_step_equals_erlmrs_own_step(three, tmp_path, name):
    """Two epochs of two batches: several backward passes, autograd.grad, several updates per batch (mla),
    an optimiser-state reset (reconboost), epoch hooks and the data-reading methods (pmr, gblending)."""
    options = {"modality": "m2"} if METHODS.get(name.split("+")[0]).needs_options else {}
    if name == "reconboost":
        options = {"stage_epochs": 1, "rectify_epochs": 0}
    torch.manual_seed(0)
    module = BalancedModule(
        {m: "mlp" for m in three.modalities},
        three.num_classes,
        name,
        options,
        model={"euler_dropout": 0.0, "encoder_options": {m: {"hidden": 16} for m in three.modalities}},
        optim={"lr": 0.05},
        splits=three,
    )
    reference = copy.deepcopy(module)
    loader = split_loader(three.train, 16)
    fit = trainer(tmp_path, 2, limit_val_batches=0, callbacks=[EpochSeeds()])
    fit.fit(module, loader)
    updates = reference_run(reference, loader, 2)
    assert fit.global_step == updates  # every update went through the LightningOptimizer (mla: one per modality)
    assert_same_state(reference, module)


def test_an_optimiser_that_leaves_out_the_methods_parameters_is_refused(three, tmp_path):
    class ModelOnly(BalancedModule):
        def configure_optimizers(self):
            return torch.optim.SGD(self.model.parameters(), lr=0.1)

    module = ModelOnly({m: "mlp" for m in three.modalities}, three.num_classes, "reconboost", splits=three)
    with pytest.raises(ConfigError, match=r"leaves out trainable parameters \['method.rate'\]"):
        trainer(tmp_path, 1).fit(module, split_loader(three.train, 16))


def test_bad_encoders_and_batches_get_one_clear_message(three, tmp_path):
    with pytest.raises(ConfigError, match="needs the shape of one input sample: pass input_shapes"):
        BalancedModule({"m0": "mlp", "m1": "mlp"}, 3)
    with pytest.raises(ConfigError, match="must set output_shape"):
        BalancedModule({"m0": nn.Linear(4, 4), "m1": nn.Linear(4, 4)}, 3)
    module = BalancedModule({m: "mlp" for m in three.modalities}, three.num_classes, "joint", splits=three)
    pairs = [(three.train[i][0]["m0"], three.train[i][1]) for i in range(16)]  # a tensor, not a dict of modalities
    with pytest.raises(DataError, match=r"batches of \(dict of modality tensors, labels\)"):
        trainer(tmp_path, 1).fit(module, torch.utils.data.DataLoader(pairs, batch_size=8))


def test_without_lightning_the_import_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "lightning.pytorch", None)
    for name in [m for m in sys.modules if m == "erlmr.lightning" or m.startswith("erlmr.lightning.")]:
        monkeypatch.delitem(sys.modules, name)
    with pytest.raises(
        MissingDependencyError, match=r"erlmr.lightning needs lightning: pip install 'erlmr\[lightning\]'"
    ):
        import erlmr.lightning  # noqa: F401
