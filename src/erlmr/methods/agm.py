"""AGM: adaptive gradient modulation through Shapley-style mono-modal responses.

Li, Li, Hu, Yang, Zhang. "Boosting Multi-modal Model Performance with Adaptive Gradient Modulation".
ICCV 2023. Official code: github.com/lihong2303/AGM (``model/CREMAD_net.py`` ``GradMod``,
``run/CREMAD_main.py`` ``train``; the M-modality ratio of ``run/MOSEI_main.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations
from typing import TYPE_CHECKING, Mapping

import torch
import torch.nn.functional as F

from ..nn.model import ModelOutput, MultiModalModel
from ..options import log_uniform, ranged
from ..parallel import all_reduce_mean
from .base import METHODS, Method, MethodContext, StepResult
from .scores import WindowOptions, in_window, mean_of_others

if TYPE_CHECKING:
    from ..training.step import StepContext

#: the official code caps the exponent of a coefficient at 10
MAX_EXPONENT = 10.0
#: probabilities below this count as this in the response losses, as in the official code
MIN_PROBABILITY = 1e-8
#: the official loop clips when an element of the output layer's weight gradient leaves [−1, 1]
HEAD_GRADIENT_LIMIT = 1.0


@dataclass
class AGMOptions(WindowOptions):
    """The window counts epochs from 1, as the official code does: the defaults modulate the first 20."""

    alpha: float = ranged(1.0, ge=0, search=log_uniform(0.1, 3.0))
    modulation_end: int = ranged(20, ge=0)
    #: 0 turns the clipping off
    clip_norm: float = ranged(1.0, ge=0)


@METHODS.register("agm", "AGM: rescale Shapley mono-modal responses by loss vs its running mean (Li et al., ICCV 2023)")
class AGM(Method):
    """Per-modality gradient scales applied through zero-padded, Shapley-style responses.

    **Responses.** ``f(S)`` are the fused logits with only the modalities in S present
    (``model(inputs, absent=others)``: the missing modalities' fusion-head inputs are zero and their
    encoders do not run). The full pass runs in train mode, the 2^M − 2 partial passes in eval mode
    with gradients, as in the official code. Modality m's response is its Shapley value
    ``φ_m = Σ_{S ∌ m} |S|!(M−|S|−1)!/M! · [f(S ∪ {m}) − f(S)]`` with ``f(∅) := 0``; for two
    modalities that is the official ``½[f(a,v) − f(0,v) + f(a,0)]``, and for any M the responses sum
    to ``f(all)`` exactly, so the loss value is the plain fused cross-entropy.

    **Coefficients.** ``s_m`` = batch mean of ``−log softmax(φ_m)[y]`` (probability floored at 1e-8);
    ``r_m = exp(mean_{j≠m} s_j − s_m)`` (the official ``exp(M/(M−1)·(mean_j s_j − s_m))``); target
    ``r̄_m`` the same from the running means ``s̄`` of all steps so far (before this step's update);
    ``k_m = exp(α·min(r̄_m − r_m, 10))``. A modality whose loss falls behind its usual level relative to
    the others gets ``k_m > 1``; one running ahead gets ``k_m < 1``. (BalanceBenchmark flips this sign.)

    **Application.** The loss is ``CE(Σ_m φ_m ⊙ k_m)`` where ``⊙ k`` is the identity forward and
    multiplies the gradient by k backward, the same as the official backward hooks on the responses.
    Outside the modulation window k = 1 (the gradient of plain joint training) while the running means
    keep being updated, as in the official loop. Afterwards, if any element of the output layer's
    weight gradient (``model.head.output_weights()``, biases not checked) lies outside [−1, 1], all
    gradients are clipped to global norm ``clip_norm`` (official: 1.0; 0 turns it off), inside the window
    or not. Defaults: α = 1.0, window ``modulation_start`` 0 to ``modulation_end`` 20 counted from 1 as the
    official loop counts epochs, i.e. the first 20 epochs (official argparse defaults). The official
    MOSEI script checks its projection instead and the AVE script does not clip.

    The official code zero-pads the raw inputs (the encoders run on zeros); erlmr zeroes the
    fusion-head input of a missing modality, its general meaning of "absent", and skips the encoder.
    """

    Options = AGMOptions
    # Buffers (add_state), typed: nn.Module types an attribute it does not know as a tensor or a module.
    shapley_weights: torch.Tensor
    running_scores: torch.Tensor
    steps: torch.Tensor

    def __init__(self, model: MultiModalModel, options: AGMOptions, context: MethodContext):
        super().__init__(model, options, context)
        self.modalities = list(model.modalities)
        count = len(self.modalities)
        self.coalitions = [s for size in range(count, 0, -1) for s in combinations(range(count), size)]
        self.register_buffer("shapley_weights", shapley_matrix(count, self.coalitions), persistent=False)
        # Scores are all-reduced before they enter the running means, so the states need no reduction.
        self.add_state("running_scores", torch.zeros(count))
        self.add_state("steps", torch.zeros((), dtype=torch.long))
        self.coefficients = torch.ones(count)

    @property
    def last_coefficients(self) -> dict[str, float]:
        return dict(zip(self.modalities, self.coefficients.tolist()))

    def responses(self, model: MultiModalModel, inputs: Mapping[str, torch.Tensor]) -> tuple[ModelOutput, torch.Tensor]:
        """The full forward pass and the Shapley responses, shape ``(M, B, classes)``."""
        full = model(inputs)
        was_training = model.training
        model.eval()
        partial = [
            model(inputs, absent=[m for i, m in enumerate(self.modalities) if i not in coalition]).logits
            for coalition in self.coalitions[1:]
        ]
        model.train(was_training)
        values = torch.stack([full.logits, *partial])
        return full, torch.einsum("ms,sbc->mbc", self.shapley_weights.to(values.dtype), values)

    def update_coefficients(self, scores: torch.Tensor) -> torch.Tensor:
        """Coefficients from this step's response losses ``scores`` (M,), then the running-mean update."""
        ratios = torch.exp(mean_of_others(scores) - scores)
        targets = torch.exp(mean_of_others(self.running_scores) - self.running_scores)
        coefficients = torch.exp(self.options.alpha * (targets - ratios).clamp(max=MAX_EXPONENT))
        self.steps += 1
        self.running_scores += (scores - self.running_scores) / self.steps
        return coefficients

    def training_step(
        self, model: MultiModalModel, inputs: Mapping[str, torch.Tensor], labels: torch.Tensor, step: StepContext
    ) -> StepResult:
        full, responses = self.responses(model, inputs)
        scores = all_reduce_mean(response_losses(responses.detach(), labels))
        coefficients = self.update_coefficients(scores)
        # 1-based epochs, as in the official code (its epoch loop starts at 1)
        if not in_window(self.epoch + 1, self.options.modulation_start, self.options.modulation_end):
            coefficients = torch.ones_like(coefficients)
        self.coefficients = coefficients.detach()
        scaled = [scale_gradient(r, k) for r, k in zip(responses, coefficients)]
        loss = F.cross_entropy(torch.stack(scaled).sum(0), labels)
        step.backward(loss)
        logs = {f"agm_coefficient_{m}": k for m, k in zip(self.modalities, self.coefficients)}
        logs.update({f"agm_response_loss_{m}": s for m, s in zip(self.modalities, scores)})
        return StepResult(loss.detach(), full, logs)

    def modify_gradients(self, model: MultiModalModel, result: StepResult, labels: torch.Tensor) -> None:
        """The official clipping: all gradients to norm ``clip_norm`` when an element of the output
        layer's weight gradient (not its bias) leaves [−1, 1]."""
        if self.options.clip_norm == 0:
            return
        head = [p.grad for p in model.head.output_weights() if p.grad is not None]
        if head and max(float(g.abs().max()) for g in head) > HEAD_GRADIENT_LIMIT:
            torch.nn.utils.clip_grad_norm_(model.parameters(), self.options.clip_norm)


def shapley_matrix(count: int, coalitions: list[tuple[int, ...]]) -> torch.Tensor:
    """``W[m, s]`` such that ``φ_m = Σ_s W[m, s]·f(coalitions[s])`` is the Shapley value with f(∅) = 0."""

    def weight(size: int) -> float:
        return math.factorial(size) * math.factorial(count - size - 1) / math.factorial(count)

    matrix = torch.zeros(count, len(coalitions))
    for s, coalition in enumerate(coalitions):
        for m in range(count):
            # f(S) enters φ_m as f(S' ∪ {m}) with S' = S − {m} when m ∈ S, and as −f(S) when m ∉ S.
            matrix[m, s] = weight(len(coalition) - 1) if m in coalition else -weight(len(coalition))
    return matrix


def response_losses(responses: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per modality, the batch mean of ``−log softmax(φ_m)[y]`` with the probability floored at 1e-8."""
    index = labels.expand(len(responses), -1).unsqueeze(2)
    nll = -responses.log_softmax(2).gather(2, index).squeeze(2)
    return nll.clamp(max=-math.log(MIN_PROBABILITY)).mean(1)


def scale_gradient(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``x`` unchanged in the forward pass; its gradient multiplied by ``scale`` in the backward pass."""
    frozen = x.detach()
    return frozen + scale * (x - frozen)
