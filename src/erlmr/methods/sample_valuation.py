"""Sample-level modality valuation: per-sample Shapley contributions, extra copies that train the weak modality alone.

Wei, Feng, Wang, Hu. "Enhancing Multimodal Cooperation via Sample-level Modality Valuation". CVPR 2024
(arXiv 2309.06255). Official code: github.com/GeWu-Lab/Valuate-and-Enhance-Multimodal-Cooperation
@ 7ed12b0 (``code/sample_level.py`` ``execute_modulation``; ``code/modality_level.py``;
``code/datasets/dataloader.py`` ``AV_KS_Dataset_sample_level`` / ``_modality_level``; ``code/models/models.py``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

import torch
import torch.distributed as dist
import torch.nn.functional as F

from ..data.base import Split
from ..errors import ConfigError
from ..nn.model import MultiModalModel
from ..options import CheckedOptions, one_of, ranged
from ..parallel import all_reduce_sum, is_distributed, world_size
from .base import METHODS, Method, MethodContext, StepResult, require_splits

if TYPE_CHECKING:
    from ..training.step import StepContext

#: the role of an occurrence that trains with every modality (the original sample)
ALL_MODALITIES = -1


@dataclass
class SampleValuationOptions(CheckedOptions):
    #: "sample": copies per sample from its own contributions (the paper's main method);
    #: "modality": copies of random samples for the modality behind on average (BalanceBenchmark's default)
    level: str = one_of("sample", ("sample", "modality"))
    #: epochs of plain training; the first re-sampled epoch is ``warmup`` (0-based)
    warmup: int = ranged(5, ge=1)
    #: modality level: the fraction of the train split valued, drawn with replacement (Z)
    part_ratio: float = ranged(0.2, gt=0, le=1)
    #: modality level: the copies are ``int(alpha · 2/3 · gap difference · N)``
    alpha: float = ranged(1.0, ge=0)


def shapley_contributions(correct: torch.Tensor) -> torch.Tensor:
    """Per sample and modality the Shapley value of ``v(S) = |S|·1[the head on S alone is right]``.

    ``correct`` is ``(2^M, B)``: row ``s`` says, for the coalition whose bit m is set when modality m
    is in it, whether the prediction is right (row 0, the empty coalition, is ignored: v(∅) = 0).
    Integer arithmetic up to one division by M!, so values such as exactly 1 stay exact. ``(B, M)``.
    """
    coalitions, count = correct.shape[0], int(math.log2(correct.shape[0]))
    sizes = torch.tensor([s.bit_count() for s in range(coalitions)])
    values = sizes.unsqueeze(1) * correct.long().cpu()
    values[0] = 0
    numerators = torch.zeros(correct.shape[1], count, dtype=torch.long)
    for m in range(count):
        for s in range(coalitions):
            if not s >> m & 1:
                weight = math.factorial(int(sizes[s])) * math.factorial(count - int(sizes[s]) - 1)
                numerators[:, m] += weight * (values[s | 1 << m] - values[s])
    return numerators.double() / math.factorial(count)


def sample_copies(contributions: torch.Tensor) -> torch.Tensor:
    """The official thresholds: 1 copy for 0.4 < φ < 1, 2 for −0.1 < φ < 0.4, 3 for φ < −0.1, else none
    (φ = 1 is a modality's fair share; with M = 2, φ ∈ {−0.5, 0, 0.5, 1, 1.5} → 3, 2, 1, 0, 0)."""
    c = contributions
    copies = torch.zeros(c.shape, dtype=torch.long)
    copies[(c > 0.4) & (c < 1)] = 1
    copies[(c > -0.1) & (c < 0.4)] = 2
    copies[c < -0.1] = 3
    return copies


@torch.no_grad()
def coalition_correctness(
    model: MultiModalModel, inputs: Mapping[str, torch.Tensor], labels: torch.Tensor
) -> torch.Tensor:
    """``(2^M, B)``: whether the fusion head is right with only coalition s's fusion inputs (the others
    zero, as a missing modality's are), from one encoder pass."""
    output = model(inputs)
    features = [output.features[m] for m in model.modalities]
    rows = [torch.zeros_like(labels, dtype=torch.bool)]
    for s in range(1, 2 ** len(features)):
        kept = [f if s >> i & 1 else torch.zeros_like(f) for i, f in enumerate(features)]
        rows.append(model.head(kept).logits.argmax(1) == labels)
    return torch.stack(rows)


def value_split(model: MultiModalModel, split: Split, batch_size: int, device: torch.device) -> torch.Tensor:
    """Every sample's contributions ``(N, M)`` in eval mode; under torch.distributed each rank values
    every world_size-th batch and the table is summed, so all ranks get the same one."""
    rank, ranks = (dist.get_rank(), world_size()) if is_distributed() else (0, 1)
    table = torch.zeros(len(split), len(model.modalities), dtype=torch.float64)
    was_training = model.training
    model.eval()
    for number, start in enumerate(range(0, len(split), batch_size)):
        if number % ranks == rank:
            inputs, labels = split.__getitems__(range(start, min(start + batch_size, len(split))))
            inputs = {m: x.to(device) for m, x in inputs.items()}
            correct = coalition_correctness(model, inputs, labels.to(device))
            table[start : start + len(labels)] = shapley_contributions(correct)
    model.train(was_training)
    return all_reduce_sum(table.to(device)).cpu()


@dataclass
class EpochPlan:
    """One epoch's re-sampling: every sample once plus ``copies[i, m]`` occurrences of sample i that train
    modality m alone, and which occurrence is which.

    ``roles`` lists, sample after sample (sample i's block starts at ``offsets[i]``), the role of each of
    its occurrences in a random order drawn when the plan is made: ``ALL_MODALITIES`` for the original,
    m for a copy. The k-th time the epoch's (shuffled) batches bring sample i, it takes the k-th role of
    its block, so each role is trained once and which occurrence gets it is uniformly random, as in
    the official code, which shuffles copies and originals together. ``used[i]`` counts the
    occurrences already taken.
    """

    copies: torch.Tensor
    roles: torch.Tensor
    offsets: torch.Tensor
    used: torch.Tensor

    @classmethod
    def draw(cls, copies: torch.Tensor, generator: torch.Generator) -> EpochPlan:
        count, modalities = copies.shape
        samples = torch.cat([torch.arange(count), torch.arange(count).repeat_interleave(copies.sum(1))])
        roles = torch.cat(
            [
                torch.full((count,), ALL_MODALITIES),
                torch.arange(modalities).repeat(count).repeat_interleave(copies.flatten()),
            ]
        )
        order = torch.rand(len(samples), generator=generator).argsort()
        order = order[samples[order].argsort(stable=True)]  # grouped by sample, shuffled within each
        sizes = 1 + copies.sum(1)
        return cls(copies, roles[order], sizes.cumsum(0) - sizes, torch.zeros(count, dtype=torch.long))

    def samples(self) -> torch.Tensor:
        """The epoch's train-split indices: every sample ``1 + Σ_m copies[i, m]`` times."""
        return torch.arange(len(self.copies)).repeat_interleave(1 + self.copies.sum(1))

    def take(self, batch: torch.Tensor) -> torch.Tensor:
        """The roles of the global batch ``batch`` (indices, in rank order), marking them used."""
        earlier = (batch.unsqueeze(1) == batch.unsqueeze(0)).tril(-1).sum(1)  # repeats within this batch
        occurrence = self.used[batch] + earlier
        sizes = 1 + self.copies[batch].sum(1)
        roles = self.roles[self.offsets[batch] + occurrence.clamp(max=sizes - 1)]
        self.used.index_add_(0, batch, torch.ones_like(batch))
        return torch.where(occurrence < sizes, roles, ALL_MODALITIES)

    def restart(self) -> None:
        self.used.zero_()


def gather_batch(samples: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, slice]:
    """The global batch's sample indices in rank order, and where this rank's share lies in it
    (every rank holds an equal share: :class:`~erlmr.training.distributed.ShardedBatchSampler`)."""
    if not is_distributed():
        return samples, slice(0, len(samples))
    rank, share = dist.get_rank(), len(samples)
    table = torch.zeros(world_size(), share, dtype=torch.long, device=device)
    table[rank] = samples.to(device)
    return all_reduce_sum(table).flatten().cpu(), slice(rank * share, (rank + 1) * share)


@METHODS.register(
    "sample_valuation",
    "Sample-level valuation: Shapley contribution per sample, extra copies train the weak modality alone "
    "(Wei et al., CVPR 2024)",
)
class SampleValuation(Method):
    """Re-sample the training set each epoch so that samples whose weak modality contributes little get
    extra copies that train that modality alone.

    **Valuation** (end of every epoch ``e ≥ warmup − 1``, eval mode, whole train split in order, no
    augmentation): for every coalition S of modalities the fusion head sees only S's fusion inputs
    (the others zero); ``v(S) = |S|·1[right]``; φ = the Shapley value (:func:`shapley_contributions`;
    M = 2: ``φ_a = (v_a + v_all − v_v)/2``, the official formula). Σ_m φ_m = M when the model is right,
    so 1 is the fair share for any M and the official thresholds keep their meaning.
    **Re-sampling** for epoch e + 1 (:meth:`epoch_samples`): every sample once, plus
    :func:`sample_copies` copies per modality, each training with only that modality (the other
    fusion inputs zeroed after the encoders, as the official code does). ``level: modality``: φ
    averaged over a random ``part_ratio`` of the split (with replacement); every modality m whose gap
    ``1 − φ̄_m`` exceeds the mean gap of the others gets ``int(α·⅔·(gap_m − mean_{n≠m} gap_n)·N)``
    copies of random samples (with replacement) that train it alone (M = 2: the official count).

    Which occurrence of a sample is the original and which a copy is drawn when the plan is made
    (:class:`EpochPlan`) and looked up through ``step.samples``, counted across the global batch under
    torch.distributed; the plan is the method's extra state, so a resumed epoch trains the same copies.
    Defaults: warmup 5, level sample, part_ratio 0.2, α 1 (the official argparse). Extra cost: none
    per step beyond one more fusion-head evaluation on batches with copies; per epoch from
    ``warmup − 1`` on, one eval pass over the train split (``modality``: over ``part_ratio`` of it)
    with 2^M − 1 head evaluations per batch; epochs grow by the copies (up to 3·M·N samples).
    """

    Options = SampleValuationOptions

    def __init__(self, model: MultiModalModel, options: SampleValuationOptions, context: MethodContext):
        super().__init__(model, options, context)
        self.modalities = list(model.modalities)
        self.seed = torch.initial_seed()
        #: the current epoch's re-sampling; None before the first valuation
        self.plan: EpochPlan | None = None

    def adopt(self, copies: torch.Tensor, epoch: int) -> None:
        """Make ``copies`` the plan of epoch ``epoch``, its roles drawn from the run's seed and the epoch."""
        # a stream apart from modality_plan's (seed + epoch)
        self.plan = EpochPlan.draw(copies, torch.Generator().manual_seed(self.seed + 7919 * epoch))

    def on_epoch_start(self, model: MultiModalModel, epoch: int) -> None:
        super().on_epoch_start(model, epoch)
        if self.plan is not None:
            self.plan.restart()

    @property
    def resampling(self) -> bool:
        """Whether the current plan adds any copy (before the first valuation it does not)."""
        return self.plan is not None and bool(self.plan.copies.any())

    def epoch_samples(self, epoch: int) -> torch.Tensor | None:
        return self.plan.samples() if self.plan is not None and self.resampling else None

    def on_epoch_end(self, model: MultiModalModel, epoch: int) -> dict[str, float]:
        if epoch < self.options.warmup - 1:
            return {}
        train = require_splits("sample_valuation", self.context).train
        plan = self.sample_plan if self.options.level == "sample" else self.modality_plan
        copies, contributions = plan(model, train, epoch)
        self.adopt(copies, epoch + 1)
        logs = {f"sv_copies_{m}": float(copies[:, i].sum()) for i, m in enumerate(self.modalities)}
        logs.update({f"sv_contribution_{m}": float(contributions[i]) for i, m in enumerate(self.modalities)})
        return logs

    def sample_plan(self, model: MultiModalModel, train: Split, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        contributions = value_split(model, train, self.context.batch_size, self.context.device)
        return sample_copies(contributions), contributions.mean(0)

    def modality_plan(self, model: MultiModalModel, train: Split, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        generator = torch.Generator().manual_seed(self.seed + epoch)
        count = len(train)
        part = torch.randint(count, (int(self.options.part_ratio * count),), generator=generator)
        if not len(part):
            raise ConfigError(f"sample_valuation: part_ratio {self.options.part_ratio} of {count} samples values none")
        mean = value_split(model, train.subset(part), self.context.batch_size, self.context.device).mean(0)
        gaps = 1 - mean
        behind = gaps - (gaps.sum() - gaps) / (len(gaps) - 1)
        copies = torch.zeros(count, len(self.modalities), dtype=torch.long)
        for i, lead in enumerate(behind.tolist()):
            if lead > 0:
                drawn = torch.randint(count, (int(self.options.alpha * 2 / 3 * lead * count),), generator=generator)
                copies[:, i] = torch.bincount(drawn, minlength=count)
        return copies, mean

    def training_step(
        self, model: MultiModalModel, inputs: Mapping[str, torch.Tensor], labels: torch.Tensor, step: StepContext
    ) -> StepResult:
        output = model(inputs)
        logits = output.logits
        if self.resampling:
            keep = self.keep_masks(step.samples).to(labels.device)
            if not keep.all():
                features = [
                    output.features[m] * keep[:, i : i + 1].to(output.features[m])
                    for i, m in enumerate(self.modalities)
                ]
                logits = model.head(features).logits
        loss = F.cross_entropy(logits, labels)
        step.backward(loss)
        return StepResult(loss.detach(), dataclasses.replace(output, logits=logits.detach()))

    def keep_masks(self, samples: torch.Tensor | None) -> torch.Tensor:
        """``(B, M)`` 0/1: which modalities each occurrence in this batch trains with, counting it as used."""
        if samples is None or self.plan is None:
            raise ConfigError(
                "method 'sample_valuation' trains copies of samples and needs each batch's sample indices "
                "(step.samples) and its epoch hooks; train it with erlmr's trainer"
            )
        batch, mine = gather_batch(samples.cpu(), self.context.device)
        roles = self.plan.take(batch)[mine]
        keep = torch.ones(len(roles), len(self.modalities))
        alone = roles != ALL_MODALITIES
        keep[alone] = F.one_hot(roles[alone], len(self.modalities)).float()
        return keep

    def get_extra_state(self) -> dict[str, Any]:
        return {"plan": None if self.plan is None else dataclasses.asdict(self.plan)}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        plan = state["plan"]
        self.plan = None if plan is None else EpochPlan(**{k: v.cpu() for k, v in plan.items()})
