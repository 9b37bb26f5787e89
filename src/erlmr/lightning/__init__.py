"""erlmr in PyTorch Lightning: any registered method as a ``LightningModule``, the imbalance metrics of
any Lightning model as a callback.

::

    import lightning.pytorch as L
    from erlmr.lightning import BalancedModule, ImbalanceCallback

    module = BalancedModule({"audio": my_audio_net, "visual": my_visual_net}, num_classes=10, method="erlmr")
    L.Trainer(max_epochs=30).fit(module, train_loader, val_loader)   # batches: (dict of tensors, labels)

    L.Trainer(callbacks=[ImbalanceCallback()]).fit(any_model, ...)     # its model takes a dict of tensors

:class:`BalancedModule` trains with erlmr's step context on Lightning's manual optimisation
(:mod:`erlmr.lightning.module`); :class:`ImbalanceCallback` runs :func:`erlmr.diagnose` on the
validation batches (:mod:`erlmr.lightning.imbalance`). Needs ``pip install 'erlmr[lightning]'``.
"""

from ..extras import require

require("lightning.pytorch", "lightning", "erlmr.lightning")

from .imbalance import ImbalanceCallback, flat_metrics  # noqa: E402
from .module import BalancedModule, LightningStepContext, split_loader  # noqa: E402

__all__ = ["BalancedModule", "ImbalanceCallback", "LightningStepContext", "flat_metrics", "split_loader"]
