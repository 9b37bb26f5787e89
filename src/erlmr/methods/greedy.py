"""Greedy: balanced multi-modal learning against the greedy nature of joint training.

Wu, Jastrzębski, Cho, Geras. "Characterizing and Overcoming the Greedy Nature of Learning in
Multi-modal Deep Neural Networks". ICML 2022 (PMLR 162). Official code:
github.com/nyukat/greedy_multimodal_learning @ a190e03 (``src/balanced_mmtm.py`` ``MMTM_mitigate``,
``src/callbacks.py`` ``Bias_Mitigation_Strong``, ``train.py`` ``blend_loss``, defaults from
``configs/training_guided.gin``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Collection, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..nn.fusion import ConcatFusion, SumFusion
from ..nn.model import ModelOutput, MultiModalModel, pool_positions
from ..options import CheckedOptions, log_uniform, ranged
from ..training.distributed import all_reduce_mean
from .base import METHODS, Method, MethodContext, StepResult, require_splits
from .ume import encoder_widths

if TYPE_CHECKING:
    from ..data import Split
    from ..training.step import StepContext


@dataclass
class GreedyOptions(CheckedOptions):
    #: ε: re-balance when the conditional learning speeds differ by more (``epsilon``; BalanceBenchmark 0.001)
    epsilon: float = ranged(0.01, ge=0, search=log_uniform(0.001, 0.1))
    #: Q: steps in one re-balancing window (``curation_windowsize``)
    window: int = ranged(5, ge=1)
    #: the first epoch, from 0, that may re-balance (official ``starting_epoch=2`` counts from 1)
    starting_epoch: int = ranged(1, ge=0)
    #: the MMTM's reduction: its hidden width is ⌊2·ΣC_m / ratio⌋ (official 4)
    ratio: float = ranged(4.0, gt=0)
    #: after every epoch, measure the conditional utilisation rates on the validation split
    utilisation: bool = False


class MMTM(nn.Module):
    """A multi-modal transfer module (Joze et al., CVPR 2020) for M modalities.

    Squeeze: every modality's map averaged over positions, concatenated (width ΣC_m), one linear layer
    and a ReLU; excitation: one linear layer and a sigmoid per modality, ``e_m`` of width C_m, which
    rescales that modality's channels. ``e_m`` depends on every modality: the cross-modal flow.
    """

    def __init__(self, widths: Sequence[int], ratio: float):
        super().__init__()
        self.widths = list(widths)
        hidden = max(1, int(2 * sum(self.widths) / ratio))
        self.squeeze = nn.Linear(sum(self.widths), hidden)
        self.excite = nn.ModuleList(nn.Linear(hidden, width) for width in self.widths)

    def forward(self, squeezes: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """The excitations ``e_m`` (B, C_m) from the squeezed maps (B, C_m), all modalities' in order."""
        hidden = F.relu(self.squeeze(torch.cat(list(squeezes), dim=1)))
        return [torch.sigmoid(layer(hidden)) for layer in self.excite]


def rescale(encoded: torch.Tensor, excitation: torch.Tensor) -> torch.Tensor:
    """Channels of an encoder output (B, C, ...) multiplied by the excitation (B, C)."""
    return encoded * excitation.view(*excitation.shape, *(1,) * (encoded.dim() - 2))


def learning_speed(params: Sequence[nn.Parameter]) -> torch.Tensor:
    """``Σ‖∇p‖² / Σ‖p‖²`` over a group of parameters (a ratio of sums, as the official code), on device."""
    weights = torch.stack(torch._foreach_norm(list(params))).square().sum()
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros_like(weights)
    return torch.stack(torch._foreach_norm(grads)).square().sum() / weights


@METHODS.register(
    "greedy",
    "Greedy: MMTM cross-modal flow, re-balancing steps cut the flow into the modality that learns fastest "
    "from it (Wu et al., ICML 2022)",
)
class Greedy(Method):
    """Balanced multi-modal learning with an MMTM between the encoders and the fusion head.

    **Model.** An M-way :class:`MMTM` (``mmtm``) rescales every encoder's output before the model's
    representation and fusion head; the loss is ``Σ_m CE(ℓ_m, y)`` over the head's per-modality logits
    (the official per-branch classifiers); the prediction is ``mean_m ℓ_m`` (official).

    **Conditional learning speed.** After every backward pass outside re-balancing, for each modality
    the ratio ``Σ‖∇p‖²/Σ‖p‖²`` of its *bypass* parameters (its excitation layer and the shared squeeze
    layer) and of its *main* parameters (its encoder) is added to running sums that are never reset;
    ``BDR_m = log10(S_bypass,m / S_main,m)``. A large BDR_m means modality m learns through the others.

    **Re-balancing.** From ``starting_epoch`` on, when ``max_m BDR_m − min_m BDR_m > ε`` the next
    ``window`` steps re-balance: the *caring* modality ``argmax_m BDR_m`` has its excitation replaced
    by the running mean of its batch-mean excitations, so no cross-modal information reaches it and
    its encoder must learn from its own input. For two modalities this is the official sign rule
    (``BDR_0 > BDR_1`` → modality 0). The speeds are not accumulated while re-balancing.

    **Conditional utilisation rate** (``utilisation: true``, after every epoch, on the validation
    split): ``u_m = (A_m − A_m^alone) / A_m``, with ``A_m`` the accuracy of ``ℓ_m`` and ``A_m^alone``
    that with the others' squeezed maps replaced by their train-split means (the official
    ``mmtm_off`` evaluation), so that ``e_m`` carries nothing of the other modalities' samples. For two
    modalities ``u_m0`` is the paper's u(1|0) and the imbalance is ``u_m0 − u_m1`` (the formula is the
    paper's; the official code computes only its ingredients, in ``eval.py``).

    Defaults (``configs/training_guided.gin``): ε = 0.01, window 5, starting epoch 1 (0-based),
    ratio 4; the official optimiser is SGD lr 0.1 without momentum, batch 8. Logs ``greedy_bdr_<m>``
    at the end of each epoch and ``greedy_curated_<m>``, the share of its steps that re-balanced m.

    Differences from the official code: one M-way MMTM after the encoders instead of MMTMs after ResNet
    stages 2–4 (erlmr's encoders are of any kind); a modality's main parameters are its encoder only
    (the official counts its branch classifier, which the concat head does not have as a tensor of its
    own); each modality's running mean is its own excitation's (the official averages modality 0's into
    both, so re-balancing modality 1 injects modality 0's mean) and is updated in training steps only
    (the official also updates it in validation and test passes), kept in the state dict and averaged
    over ranks; an absent modality's squeezed map is zero. Heads whose per-modality logits do not
    add up to the prediction (FiLM, gated) are refused.

    Extra cost per step: one MMTM forward/backward (M + 1 linear layers on (B, ΣC_m)); one norm per
    parameter and per gradient and one host synchronisation outside re-balancing. With
    ``utilisation``: one pass over the train split's encoders and two over val per epoch.
    """

    Options = GreedyOptions
    excitation_means: torch.Tensor
    excitation_batches: torch.Tensor
    speed_sums: torch.Tensor
    curating: torch.Tensor
    caring: torch.Tensor
    curation_steps: torch.Tensor

    def __init__(self, model: MultiModalModel, options: GreedyOptions, context: MethodContext):
        super().__init__(model, options, context)
        if not isinstance(model.head, (ConcatFusion, SumFusion)):
            raise ConfigError(
                f"greedy averages the per-modality logits into its prediction, which {type(model.head).__name__} "
                "does not add up to; use model.fusion: concat or sum"
            )
        self.modalities = list(model.modalities)
        self.widths = encoder_widths(model)
        self.mmtm = MMTM(self.widths, options.ratio)
        # Running means of each modality's batch-mean excitation (concatenated) and how many batches made them.
        self.add_state("excitation_means", torch.zeros(sum(self.widths)))
        self.add_state("excitation_batches", torch.zeros((), dtype=torch.long))
        # Cumulative learning speeds: row 0 the bypass groups, row 1 the main groups.
        self.add_state("speed_sums", torch.zeros(2, len(self.modalities)))
        self.add_state("curating", torch.zeros((), dtype=torch.bool))
        self.add_state("caring", torch.zeros((), dtype=torch.long))
        self.add_state("curation_steps", torch.zeros((), dtype=torch.long))

    def forward_pass(
        self,
        model: MultiModalModel,
        inputs: Mapping[str, torch.Tensor],
        absent: Collection[str] = (),
        caring: int | None = None,
        update: bool = False,
    ) -> ModelOutput:
        """Encoders, the MMTM (``caring``'s excitation replaced by its running mean), representation, head."""
        encoded, batch = model.encode(inputs, absent)
        excitations = self.mmtm(self.squeezes(encoded, batch))
        if update:
            self.update_means(excitations)
        if caring is not None:
            excitations[caring] = self.mean_excitations()[caring].expand(batch, -1)
        excited = {m: rescale(encoded[m], excitations[i]) for i, m in enumerate(self.modalities) if m in encoded}
        return self.fuse(model, excited, batch)

    def squeezes(self, encoded: Mapping[str, torch.Tensor], batch: int) -> list[torch.Tensor]:
        """Every modality's map averaged over positions; zeros for an absent one."""
        reference = self.mmtm.squeeze.weight
        return [
            pool_positions(encoded[m]) if m in encoded else reference.new_zeros(batch, width)
            for m, width in zip(self.modalities, self.widths)
        ]

    def fuse(self, model: MultiModalModel, excited: Mapping[str, torch.Tensor], batch: int) -> ModelOutput:
        return model.fuse(excited, model.represent(excited, batch))

    def mean_excitations(self) -> list[torch.Tensor]:
        return list(self.excitation_means.split(self.widths))

    @torch.no_grad()
    def update_means(self, excitations: Sequence[torch.Tensor]) -> None:
        """Fold this batch's mean excitation of every modality (averaged over ranks) into the running means."""
        batch_means = all_reduce_mean(torch.cat([e.detach().mean(0) for e in excitations]))
        count = self.excitation_batches.to(batch_means.dtype)
        self.excitation_means.copy_((self.excitation_means * count + batch_means) / (count + 1))
        self.excitation_batches += 1

    def training_step(
        self, model: MultiModalModel, inputs: Mapping[str, torch.Tensor], labels: torch.Tensor, step: StepContext
    ) -> StepResult:
        caring = int(self.caring) if bool(self.curating) else None
        output = self.forward_pass(model, inputs, caring=caring, update=True)
        loss = torch.stack([F.cross_entropy(x, labels) for x in output.modality_logits.values()]).sum()
        step.backward(loss)
        logs = {f"greedy_curated_{m}": torch.tensor(float(caring == i)) for i, m in enumerate(self.modalities)}
        return StepResult(loss.detach(), output, logs)

    @torch.no_grad()
    def modify_gradients(self, model: MultiModalModel, result: StepResult, labels: torch.Tensor) -> None:
        """After the (rank-averaged) backward pass: count a re-balancing step, or accumulate the speeds
        and decide whether the next steps re-balance."""
        if bool(self.curating):
            self.curation_steps += 1
            if int(self.curation_steps) >= self.options.window:
                self.curating.fill_(False)
            return
        self.speed_sums += self.learning_speeds(model)
        ratios = self.balance_ratios()
        if self.epoch >= self.options.starting_epoch and bool(ratios.max() - ratios.min() > self.options.epsilon):
            self.curating.fill_(True)
            self.caring.fill_(int(ratios.argmax()))
            self.curation_steps.zero_()

    def learning_speeds(self, model: MultiModalModel) -> torch.Tensor:
        """This step's (2, M) speeds: row 0 each modality's bypass group, row 1 its encoder."""
        shared = list(self.mmtm.squeeze.parameters())
        bypass = [learning_speed([*layer.parameters(), *shared]) for layer in self.mmtm.excite]
        main = [learning_speed([p for p in model.encoders[m].parameters() if p.requires_grad]) for m in self.modalities]
        return torch.stack([torch.stack(bypass), torch.stack(main)]).to(self.speed_sums.dtype)

    def balance_ratios(self) -> torch.Tensor:
        """``BDR_m = log10(S_bypass,m / S_main,m)`` from the running sums, (M,)."""
        return torch.log10(self.speed_sums[0] / self.speed_sums[1])

    def predict(
        self, model: MultiModalModel, inputs: Mapping[str, torch.Tensor], absent: Collection[str] = ()
    ) -> ModelOutput:
        output = self.forward_pass(model, inputs, absent)
        output.logits = torch.stack(list(output.modality_logits.values())).mean(0)
        return output

    def on_epoch_end(self, model: MultiModalModel, epoch: int) -> dict[str, float]:
        logs = {f"greedy_bdr_{m}": float(r) for m, r in zip(self.modalities, self.balance_ratios())}
        if self.options.utilisation:
            splits = require_splits("greedy", self.context)
            logs.update(self.utilisation(model, splits.train, splits.val))
        return logs

    @torch.no_grad()
    def utilisation(self, model: MultiModalModel, train: Split, val: Split) -> dict[str, float]:
        """``greedy_utilisation_<m>`` = u(others | m) on ``val``, the others' squeezes at their train means."""
        was_training = model.training
        model.eval()
        means = self.train_squeezes(model, train)
        correct = torch.zeros(2, len(self.modalities))
        for inputs, labels in val.batches(self.context.batch_size, self.context.device):
            encoded, batch = model.encode(inputs)
            squeezes = self.squeezes(encoded, batch)
            together = self.fuse(
                model, {m: rescale(encoded[m], e) for m, e in zip(self.modalities, self.mmtm(squeezes))}, batch
            )
            for i, m in enumerate(self.modalities):
                alone = [s if j == i else means[j].expand(batch, -1) for j, s in enumerate(squeezes)]
                solo = self.fuse(model, {m: rescale(encoded[m], self.mmtm(alone)[i])}, batch).modality_logits[m]
                correct[0, i] += int((together.modality_logits[m].argmax(1) == labels).sum())
                correct[1, i] += int((solo.argmax(1) == labels).sum())
        model.train(was_training)
        rates = (correct[0] - correct[1]) / correct[0].clamp_min(1)
        return {f"greedy_utilisation_{m}": float(u) for m, u in zip(self.modalities, rates)}

    def train_squeezes(self, model: MultiModalModel, train: Split) -> list[torch.Tensor]:
        """Every modality's squeezed map averaged over the train split (model in eval mode)."""
        totals = [torch.zeros(width, device=self.context.device) for width in self.widths]
        for inputs, _ in train.batches(self.context.batch_size, self.context.device):
            encoded, batch = model.encode(inputs)
            for total, squeeze in zip(totals, self.squeezes(encoded, batch)):
                total += squeeze.sum(0)
        return [total / max(len(train), 1) for total in totals]
