"""ERL-MR trained by PyTorch Lightning on BasicMotions, with the imbalance metrics logged every epoch.

    pip install 'erlmr[lightning,datasets]'
    python examples/lightning_basicmotions.py

The README's Lightning section is this file. BalancedModule takes any encoders (a dict of nn.Modules with
``output_shape``, or erlmr encoder names) and any registered method; batches are (dict of tensors, labels).
"""

import lightning.pytorch as L
from torch import nn

from erlmr.data import load_dataset
from erlmr.lightning import BalancedModule, ImbalanceCallback, split_loader


class SensorNet(nn.Module):
    """A user's own encoder: (B, 3, 100) sensor series to a (B, 16, 4) feature map, the shape erlmr's
    cnn1d gives the other modality (ERL-MR's shared Euler projection needs equal sizes)."""

    output_shape = (16, 4)

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv1d(3, 16, 5, padding=2),
            nn.ReLU(),
            nn.Conv1d(16, 16, 5, padding=2),
            nn.ReLU(),
            nn.AdaptiveMaxPool1d(4),
        )

    def forward(self, x):
        return self.net(x)


L.seed_everything(0)
splits = load_dataset("basicmotions", None, 0, 0.2, {})
module = BalancedModule(
    {"acc": SensorNet(), "gyro": "cnn1d"},
    splits.num_classes,
    method="erlmr",  # a module of yours, or a name
    model={"encoder_options": {"gyro": {"channels": 16}}},
    optim={"name": "adam", "lr": 0.003},
    splits=splits,
)
trainer = L.Trainer(
    max_epochs=8,
    accelerator="cpu",
    logger=False,
    enable_progress_bar=False,
    callbacks=[ImbalanceCallback(split_loader(splits.test, 16), prefix="test/")],
)
trainer.fit(module, split_loader(splits.train, 16, shuffle=True), split_loader(splits.val, 16))
metrics = {k: round(float(v), 3) for k, v in trainer.callback_metrics.items()}
print({k: v for k, v in metrics.items() if k.startswith(("val_", "test/"))})
