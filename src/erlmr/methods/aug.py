"""AUG: sustained boosting per modality, with learners assigned adaptively to the weaker modality.

Jiang, Huang, Yang. "Rethinking Multimodal Learning from the Perspective of Mitigating Classification
Ability Disproportion". NeurIPS 2025 (oral; arXiv 2502.20120). Official code:
github.com/njustkmg/NeurIPS25-AUG @ 841d079eff52a1f381d15da3a702ac8440e9db61 (``train_CREMAD.py``
``train_audio_video`` and the main loop, ``model/AudioVideo.py`` ``AVGBShareClassifier``, ``data/crema.json``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Collection, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..nn.model import ModelOutput, MultiModalModel
from ..options import CheckedOptions, ranged
from .base import METHODS, Method, MethodContext, StepResult
from .scores import mean_of_others, true_class_scores

if TYPE_CHECKING:
    from ..training.step import StepContext

#: a learner is assigned only when the confidence gap exceeds λ by this much (official: ±0.01)
ASSIGNMENT_MARGIN = 0.01
#: the check period when neither the option nor the run length is known (the official 200-epoch run's)
DEFAULT_CHECK_EVERY = 20


@dataclass
class AUGOptions(CheckedOptions):
    #: a learner goes to the weakest modality when the others' mean confidence over its own exceeds λ + 0.01
    lam: float = ranged(1.0, gt=0)
    #: the newest learner's cross-entropy on sample i is weighted 1 − residual_weight·p_prev(y_i) (official 0.5)
    residual_weight: float = ranged(0.5, ge=0, le=1)
    #: width of every learner's hidden layer, which the shared classifier reads (official 256)
    hidden: int = ranged(256, ge=1)
    #: boosting learners pre-allocated per modality (so they are trained); no more are assigned
    max_learners: int = ranged(10, ge=0)
    #: epochs between two assignment checks, plus one after epoch 0; unset: a tenth of the run, at least 1
    #: (official; 20 of its 200 epochs)
    check_every: int | None = ranged(None, ge=1)
    #: test-time weight of each modality's ensemble, in modality order; unset = uniform
    #: (official CREMA-D: 0.4, 0.6)
    fusion_weights: list[float] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        weights = self.fusion_weights
        if weights is not None and (
            not all(isinstance(w, (int, float)) and w >= 0 for w in weights) or not sum(weights) > 0
        ):
            raise ConfigError(f"option fusion_weights must be non-negative numbers with a positive sum, got {weights}")


def xavier_linear(in_features: int, out_features: int) -> nn.Linear:
    """A Linear layer initialised as the official code initialises all of its own (xavier-normal, zero bias)."""
    layer = nn.Linear(in_features, out_features)
    nn.init.xavier_normal_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


@METHODS.register(
    "aug",
    "AUG: per-modality boosting via a shared classifier, learners to the weaker modality (Jiang et al., NeurIPS 2025)",
)
class AUG(Method):
    """Each modality m has an ensemble ``F_m = f(relu(E_m z_m)) + Σ_{k≤K_m} f(relu(A_{m,k} z_m))`` through one
    classifier ``f = Linear(hidden, C)`` shared by all modalities and learners; the model's fusion head is
    unused. Per batch, for each modality in turn: its features (computed just before its step),

    - ``K_m = 0``: ``L_m = CE(F_m, y)``;
    - ``K_m ≥ 1``, with ``G`` the newest learner's logits and ``P = F_m − G``:
      ``L_m = CE(F_m) + CE(P) + mean_i (1 − ρ·p_P(y_i))·CE_i(G)``, ``p_P`` detached, ρ = ``residual_weight``
      (the newest learner fits the residual: samples the earlier ensemble already gets right count less);

    then backward and one optimiser step: M steps per batch. ``S_m`` sums the true-class probability of
    ``F_m`` over the epoch (from the forward before m's step, summed over ranks). After epoch 0 and every
    ``check_every`` epochs (by default a tenth of the run), the modality w with the smallest S gets its
    next learner if ``mean_{j≠w} S_j / S_w > λ + 0.01`` and ``K_w < max_learners``. Test time:
    ``Σ_m w_m F_m`` over the present modalities, weights renormalised (uniform unless ``fusion_weights``).

    Differences from the official code: (1) the official learners are created after the optimiser and
    never join it, so they stay random projections; here ``max_learners`` per modality are created
    up front (in the optimiser and the checkpoint, initialised as official: xavier-normal, zero bias) and
    switched on one at a time; a learner not yet on gets no gradient, so the optimiser leaves it alone.
    (2) Fusion weights uniform by default (official CREMA-D run 0.4 audio, 0.6 video). (3) The check
    period may be set (``check_every``); unset it is the official tenth of the run. (4) M ≥ 2 rule: for
    M = 2 it is the official one (learner to video when S_a/S_v > λ + 0.01) except that audio gets one
    when S_v/S_a > λ + 0.01 instead of S_a/S_v < λ − 0.01 (for λ = 1: 1.01 against 1.0101). (5) Gradients
    are cleared to None between the modalities' steps, so each encoder is updated once per batch, the
    shared classifier M times (PyTorch 1.11's zeroing also gave the idle branch momentum updates).
    """

    Options = AUGOptions
    embeddings: nn.ModuleDict
    learners: nn.ModuleDict
    classifier: nn.Linear
    learner_counts: torch.Tensor
    confidence_sums: torch.Tensor

    def __init__(self, model: MultiModalModel, options: AUGOptions, context: MethodContext):
        super().__init__(model, options, context)
        self.modalities = list(model.modalities)
        widths = dict(zip(self.modalities, model.head.in_features))
        hidden = options.hidden
        self.embeddings = nn.ModuleDict({m: xavier_linear(d, hidden) for m, d in widths.items()})
        self.classifier = xavier_linear(hidden, context.num_classes)
        self.learners = nn.ModuleDict(
            {m: nn.ModuleList(xavier_linear(d, hidden) for _ in range(options.max_learners)) for m, d in widths.items()}
        )
        self.fusion_weights = self.checked_fusion_weights(options.fusion_weights)
        count = len(self.modalities)
        self.add_state("learner_counts", torch.zeros(count, dtype=torch.long))
        self.add_state("confidence_sums", torch.zeros(count))  # summed over ranks as they are added

    def checked_fusion_weights(self, weights: list[float] | None) -> torch.Tensor:
        if weights is None:
            return torch.full((len(self.modalities),), 1 / len(self.modalities))
        if len(weights) != len(self.modalities):
            raise ConfigError(
                f"aug: fusion_weights has {len(weights)} values for {len(self.modalities)} modalities "
                f"{self.modalities}; give one per modality, in that order"
            )
        weights_t = torch.tensor(weights, dtype=torch.float)
        return weights_t / weights_t.sum()

    def learner_logits(self, modality: str, feature: torch.Tensor, count: int) -> list[torch.Tensor]:
        """The logits of modality's base learner and of its first ``count`` boosting learners."""
        learners: nn.ModuleList = self.learners[modality]  # type: ignore[assignment]
        layers = [self.embeddings[modality], *learners[:count]]
        return [self.classifier(F.relu(layer(feature))) for layer in layers]

    def modality_loss(self, parts: list[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        """The classification and residual errors of one modality's ensemble (``parts`` from :meth:`learner_logits`)."""
        ensemble = torch.stack(parts).sum(0)
        if len(parts) == 1:
            return F.cross_entropy(ensemble, labels)
        newest, previous = parts[-1], ensemble - parts[-1]
        correct = previous.detach().softmax(1).gather(1, labels.unsqueeze(1)).squeeze(1)
        residual = (1 - self.options.residual_weight * correct) * F.cross_entropy(newest, labels, reduction="none")
        return F.cross_entropy(ensemble, labels) + F.cross_entropy(previous, labels) + residual.mean()

    def training_step(
        self, model: MultiModalModel, inputs: Mapping[str, torch.Tensor], labels: torch.Tensor, step: StepContext
    ) -> StepResult:
        counts = self.learner_counts.tolist()
        outputs, losses, ensembles = {}, [], {}
        for m, count in zip(self.modalities, counts):
            outputs[m] = model({m: inputs[m]})
            parts = self.learner_logits(m, outputs[m].features[m], count)
            loss = self.modality_loss(parts, labels)
            step.backward(loss)
            step.optimizer_step()
            losses.append(loss.detach())
            ensembles[m] = torch.stack(parts).sum(0).detach()
        scores = true_class_scores(list(ensembles.values()), labels)
        self.confidence_sums += scores.to(self.confidence_sums.device)
        output = ModelOutput(
            logits=self.fuse(ensembles),
            modality_logits=ensembles,
            features={m: o.features[m].detach() for m, o in outputs.items()},
            encoded={m: o.encoded[m].detach() for m, o in outputs.items()},
        )
        loss = (self.fusion_weights.to(losses[0].device) * torch.stack(losses)).sum()
        return StepResult(loss, output, {f"aug_loss_{m}": x for m, x in zip(self.modalities, losses)})

    def fuse(self, ensembles: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``Σ_m w_m F_m`` over the modalities given, the weights renormalised over them."""
        chosen = self.fusion_weights[[self.modalities.index(m) for m in ensembles]]
        weights = (chosen / chosen.sum()).tolist()
        return torch.stack([w * logits for w, logits in zip(weights, ensembles.values())]).sum(0)

    def on_epoch_end(self, model: MultiModalModel, epoch: int) -> dict[str, float]:
        """The adaptive assignment check (after epoch 0 and every ``check_every`` epochs); then a new tally."""
        if epoch == 0 or (epoch + 1) % self.check_period == 0:
            self.assign_learner()
        logs = {f"aug_confidence_{m}": float(s) for m, s in zip(self.modalities, self.confidence_sums)}
        logs.update({f"aug_learners_{m}": float(k) for m, k in zip(self.modalities, self.learner_counts)})
        self.confidence_sums.zero_()
        return logs

    @property
    def check_period(self) -> int:
        """Epochs between two assignment checks: the option, else a tenth of the run (official)."""
        if self.options.check_every is not None:
            return self.options.check_every
        epochs = self.context.epochs
        return DEFAULT_CHECK_EVERY if epochs is None else max(epochs // 10, 1)

    def assign_learner(self) -> int | None:
        """Switch on the next learner of the weakest modality if the confidence gap says so; its index."""
        sums = self.confidence_sums
        weakest = int(sums.argmin())
        gap = mean_of_others(sums)[weakest] / sums[weakest].clamp_min(1e-12)
        if gap > self.options.lam + ASSIGNMENT_MARGIN and self.learner_counts[weakest] < self.options.max_learners:
            self.learner_counts[weakest] += 1
            return weakest
        return None

    def predict(
        self, model: MultiModalModel, inputs: Mapping[str, torch.Tensor], absent: Collection[str] = ()
    ) -> ModelOutput:
        output = model(inputs, absent=absent)
        counts = dict(zip(self.modalities, self.learner_counts.tolist()))
        present = [m for m in self.modalities if m in output.encoded] or self.modalities[:1]  # none: a constant
        ensembles = {m: torch.stack(self.learner_logits(m, output.features[m], counts[m])).sum(0) for m in present}
        modality_logits = {m: x for m, x in ensembles.items() if m in output.encoded}
        return dataclasses.replace(output, logits=self.fuse(ensembles), modality_logits=modality_logits)
