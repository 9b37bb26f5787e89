"""erlmr.lightning.ImbalanceCallback on a plain Lightning model of a user's: it logs erlmr.diagnose's numbers."""

from __future__ import annotations

import lightning.pytorch as L
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import erlmr
from erlmr.data import load_dataset
from erlmr.lightning import ImbalanceCallback, split_loader


class DictNet(L.LightningModule):
    """A user's own model, trained by its own automatic-optimisation step: forward takes a dict of tensors
    and knows nothing of erlmr (a missing modality is simply left out of the dict: it gets zeros)."""

    def __init__(self, widths: dict[str, int], classes: int):
        super().__init__()
        self.widths = widths
        self.encoders = nn.ModuleDict({m: nn.Linear(w, 8) for m, w in widths.items()})
        self.head = nn.Linear(8 * len(widths), classes)

    def forward(self, inputs):
        batch = len(next(iter(inputs.values())))
        features = [self.encoders[m](inputs[m]) if m in inputs else torch.zeros(batch, 8) for m in self.widths]
        return self.head(torch.cat(features, 1))

    def training_step(self, batch, batch_idx):
        inputs, labels = batch
        return F.cross_entropy(self(inputs), labels)

    def validation_step(self, batch, batch_idx):
        inputs, labels = batch
        self.log("val_loss", F.cross_entropy(self(inputs), labels))

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=0.01)


class PositionalNet(DictNet):
    """The same model with a forward that takes one tensor per modality, in order."""

    def forward(self, *tensors):
        return self.head(torch.cat([self.encoders[m](x) for m, x in zip(self.widths, tensors)], 1))

    def training_step(self, batch, batch_idx):
        inputs, labels = batch
        return F.cross_entropy(self(*(inputs[m] for m in self.widths)), labels)

    def validation_step(self, batch, batch_idx):
        inputs, labels = batch
        self.log("val_loss", F.cross_entropy(self(*(inputs[m] for m in self.widths)), labels))


@pytest.fixture(scope="module")
def synthetic():
    return load_dataset("synthetic", None, 0, 0.25, {"dim": 6, "train_size": 64, "test_size": 24})


@pytest.mark.parametrize("positional", [False, True])
def test_the_callback_logs_diagnoses_numbers_for_a_plain_lightning_model(synthetic, tmp_path, positional):
    splits, order = synthetic, synthetic.modalities
    torch.manual_seed(0)
    widths = {m: splits.input_shapes()[m][0] for m in order}
    net = (PositionalNet if positional else DictNet)(widths, splits.num_classes)
    wrap = (lambda module: erlmr.PositionalModel(module, order)) if positional else None
    val, test = split_loader(splits.val, 8), split_loader(splits.test, 8)
    # One callback on the validation dataloader, one on a dataloader of its own under its own prefix.
    callbacks = [ImbalanceCallback(model=wrap), ImbalanceCallback(test, model=wrap, prefix="test_imbalance/")]
    trainer = L.Trainer(
        max_epochs=2,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        default_root_dir=tmp_path,
        callbacks=callbacks,
    )
    trainer.fit(net, split_loader(splits.train, 16, shuffle=True), val)
    logged = {k: float(v) for k, v in trainer.callback_metrics.items()}
    model = net if wrap is None else wrap(net)
    for prefix, loader in [("diagnose/", val), ("test_imbalance/", test)]:
        expected = erlmr.diagnose(model, loader)
        assert logged[f"{prefix}accuracy"] == pytest.approx(expected["accuracy"])
        assert logged[f"{prefix}imbalance_degree"] == pytest.approx(expected["imbalance_degree"], abs=1e-6)
        for m in order:
            assert logged[f"{prefix}contribution/{m}"] == pytest.approx(expected["contribution"][m], abs=1e-6)
            assert logged[f"{prefix}missing_modality_accuracy/{m}"] == pytest.approx(
                expected["missing_modality_accuracy"][m]
            )
    # A plain model has no per-modality logits, so no per-modality accuracy is made up for it.
    assert not any("modality_accuracy/" in k and "missing" not in k for k in logged)
