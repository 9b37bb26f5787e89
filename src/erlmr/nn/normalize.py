"""Input normalisation that travels with the model: per-modality shift and scale as registered buffers.

A vector modality ``(N, D)`` gets one shift and scale per feature; a modality with channels, ``(N, C, T)``
or ``(N, C, H, W)`` (or any ``(N, C, ...)``), one per channel. The statistics are buffers of
:class:`InputNormalizer`, which :class:`~erlmr.nn.model.MultiModalModel` applies first in ``forward``,
so a checkpoint holds them and a loaded model takes raw inputs.

:meth:`InputNormalizer.fit` computes them in one streaming pass over batches of the training data
(a memory-mapped set is never loaded whole): count, mean and sum of squared deviations per channel in
float64, merged batch by batch with the parallel formula of Chan, Golub & LeVeque ("Updating formulae
and a pairwise algorithm for computing sample variances", 1979), plus minimum and maximum. Kinds:

* ``standard``: ``(x - mean) / std``;
* ``robust``: ``(x - median) / (IQR / 1.349)``, the IQR of a normal distribution with unit standard
  deviation being 1.349, so that Gaussian features come out as with ``standard``. Median and quartiles
  are read from a seeded subsample of whole rows gathered in the same pass (at most
  :data:`ROBUST_VALUES` values per modality); a feature whose IQR is 0 but that is not constant (mostly
  one value, e.g. a sparse pixel) is scaled by its standard deviation instead;
* ``minmax``: ``(x - min) / (max - min)``, into [0, 1] on the training data;
* ``none``: no normaliser is built.

A constant feature (its minimum equals its maximum) keeps scale 1 and is only shifted; a warning names
the modality and its columns. Statistics that are not finite stop fitting with a :class:`DataError`.
"""

from __future__ import annotations

import warnings
from typing import Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError, DataError

#: the normalisations this module implements (``none`` is the absence of a normaliser)
KINDS = ("standard", "robust", "minmax")
#: values per modality kept for the median and quartiles of ``robust`` (2**22 float64 values = 32 MiB)
ROBUST_VALUES = 2**22
#: values per batch of the statistics pass (2**22 values: 32 MiB in float64)
BATCH_VALUES = 2**22
IQR_OF_UNIT_NORMAL = 1.349


def statistics_shape(sample_shape: Sequence[int]) -> tuple[int, ...]:
    """Shape of one modality's shift and scale: ``(D,)`` for vectors, ``(C, 1, ..., 1)`` otherwise, so that
    they broadcast over a batch ``(B, *sample_shape)``."""
    sample_shape = tuple(sample_shape)
    return sample_shape if len(sample_shape) == 1 else (sample_shape[0],) + (1,) * (len(sample_shape) - 1)


def by_channel(batch: torch.Tensor) -> torch.Tensor:
    """A batch ``(B, *sample_shape)`` as float64 ``(channels, values)``: one row per feature or channel."""
    values = batch.detach().to("cpu", torch.float64)
    return values.t() if values.dim() == 2 else values.transpose(0, 1).reshape(values.shape[1], -1)


def column_names(sample_shape: Sequence[int], columns: Sequence[int]) -> str:
    """``"feature(s) 0, 3"`` for a vector modality, ``"channel(s) 1"`` for one with channels."""
    word = "feature" if len(sample_shape) == 1 else "channel"
    shown = ", ".join(str(c) for c in columns[:8]) + (f" and {len(columns) - 8} more" if len(columns) > 8 else "")
    return f"{word}{'s' if len(columns) > 1 else ''} {shown}"


class ChannelMoments:
    """Running count, mean, sum of squared deviations, minimum and maximum per channel, in float64, over
    the finite values of the batches given to :meth:`update` (non-finite ones are counted apart)."""

    def __init__(self, channels: int):
        self.count = np.zeros(channels)
        self.mean = np.zeros(channels)
        self.squares = np.zeros(channels)
        self.minimum = np.full(channels, np.inf)
        self.maximum = np.full(channels, -np.inf)
        self.nonfinite = np.zeros(channels, dtype=np.int64)

    def update(self, values: torch.Tensor) -> None:
        """Merge a block ``(channels, values)`` (see :func:`by_channel`) into the running moments."""
        finite = torch.isfinite(values)
        counted = finite.sum(1).double()
        kept = torch.where(finite, values, 0.0)
        batch_mean = kept.sum(1) / counted.clamp_min(1)
        batch_squares = torch.where(finite, values - batch_mean[:, None], 0.0).pow(2).sum(1)
        count, mean, squares = counted.numpy(), batch_mean.numpy(), batch_squares.numpy()
        total = self.count + count
        delta = mean - self.mean
        share = np.divide(count, total, out=np.zeros_like(total), where=total > 0)
        self.mean = self.mean + delta * share
        self.squares = self.squares + squares + delta**2 * self.count * share
        self.count = total
        self.minimum = np.minimum(self.minimum, torch.where(finite, values, np.inf).amin(1).numpy())
        self.maximum = np.maximum(self.maximum, torch.where(finite, values, -np.inf).amax(1).numpy())
        self.nonfinite += (~finite).sum(1).numpy()

    @property
    def std(self) -> np.ndarray:
        """Population standard deviation per channel."""
        return np.sqrt(np.divide(self.squares, self.count, out=np.zeros_like(self.count), where=self.count > 0))

    @property
    def constant(self) -> np.ndarray:
        """Channels whose finite values are all one value (or that have none)."""
        return ~(self.maximum > self.minimum)


class RowSample:
    """A seeded choice of whole rows out of ``rows``, gathered while the rows stream past in order."""

    def __init__(self, rows: int, keep: int, seed: int):
        chosen = np.random.default_rng(seed).choice(rows, size=min(keep, rows), replace=False)
        self.chosen = np.sort(chosen)
        self.parts: list[torch.Tensor] = []

    def update(self, start: int, batch: torch.Tensor) -> None:
        """Keep the chosen rows among ``batch``, which holds rows ``start .. start + len(batch) - 1``."""
        lo, hi = np.searchsorted(self.chosen, [start, start + len(batch)])
        if hi > lo:
            self.parts.append(batch[torch.from_numpy(self.chosen[lo:hi] - start)].detach().cpu())

    def quantiles(self, levels: Sequence[float]) -> np.ndarray:
        """Per channel quantiles ``(len(levels), channels)`` of the gathered rows."""
        values = by_channel(torch.cat(self.parts)).numpy()
        return np.quantile(values, levels, axis=1)


def batched_inputs(dataset, batch_size: int) -> Iterator[Mapping[str, torch.Tensor]]:
    """The inputs of a split-like ``dataset`` (``len`` and ``__getitems__(indices) -> (inputs, labels)``, as
    :class:`erlmr.data.Split`) in order, one indexing operation per batch."""
    for start in range(0, len(dataset), batch_size):
        inputs, _ = dataset.__getitems__(range(start, min(start + batch_size, len(dataset))))
        yield inputs


class InputNormalizer(nn.Module):
    """``(x - shift) / scale`` per modality, with per-feature or per-channel statistics as buffers.

    ``shapes`` maps each modality to its sample shape. The buffers start as shift 0 and scale 1 (the
    identity) and are named ``shift_<i>``/``scale_<i>`` by the modality's position, since modality names
    may hold characters a buffer name cannot. Modalities not in the inputs are left out of the output.
    """

    def __init__(self, shapes: Mapping[str, Sequence[int]], kind: str = "standard"):
        super().__init__()
        if kind not in KINDS:
            raise ConfigError(f"unknown input normalisation {kind!r}; valid: {', '.join(KINDS)}")
        self.kind = kind
        self.modalities = list(shapes)
        self.shapes = {m: tuple(s) for m, s in shapes.items()}
        for i, m in enumerate(self.modalities):
            self.register_buffer(f"shift_{i}", torch.zeros(statistics_shape(self.shapes[m])))
            self.register_buffer(f"scale_{i}", torch.ones(statistics_shape(self.shapes[m])))

    def fit_split(self, dataset, seed: int = 0) -> None:
        """:meth:`fit` on a split-like ``dataset`` (see :func:`batched_inputs`), in batches of about
        :data:`BATCH_VALUES` values."""
        widest = max(int(np.prod(shape)) for shape in self.shapes.values())
        self.fit(batched_inputs(dataset, max(1, BATCH_VALUES // widest)), len(dataset), seed)

    def statistics(self, modality: str) -> tuple[torch.Tensor, torch.Tensor]:
        i = self.modalities.index(modality)
        return getattr(self, f"shift_{i}"), getattr(self, f"scale_{i}")

    def forward(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        normalized = {}
        for m, x in inputs.items():
            shift, scale = self.statistics(m)
            normalized[m] = (x - shift) / scale
        return normalized

    def fit(self, batches: Iterable[Mapping[str, torch.Tensor]], rows: int, seed: int = 0) -> None:
        """Set the statistics from ``batches`` of training inputs (``{modality: (B, *shape)}``, in row order,
        ``rows`` rows in all) in one pass; warns about constant features, refuses non-finite statistics."""
        moments = {m: ChannelMoments(statistics_shape(self.shapes[m])[0]) for m in self.modalities}
        samples = {}
        if self.kind == "robust":
            samples = {
                m: RowSample(rows, max(1, ROBUST_VALUES // int(np.prod(self.shapes[m]))), seed + i)
                for i, m in enumerate(self.modalities)
            }
        start = 0
        for batch in batches:
            for m in self.modalities:
                moments[m].update(by_channel(batch[m]))
                if m in samples:
                    samples[m].update(start, batch[m])
            start += len(batch[self.modalities[0]])
        for m in self.modalities:
            shift, scale = self.shift_and_scale(m, moments[m], samples.get(m))
            own_shift, own_scale = self.statistics(m)
            own_shift.copy_(torch.from_numpy(shift).reshape(own_shift.shape))
            own_scale.copy_(torch.from_numpy(scale).reshape(own_scale.shape))

    def shift_and_scale(
        self, m: str, moments: ChannelMoments, sample: RowSample | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The statistics of modality ``m`` for this kind, constant channels at scale 1."""
        bad = np.flatnonzero((moments.nonfinite > 0) | (moments.count == 0))
        if len(bad):
            raise DataError(
                f"modality {m!r} has NaN or Inf on the train split in {column_names(self.shapes[m], bad.tolist())}; "
                "clean or drop those values before training"
            )
        if self.kind == "standard":
            shift, scale = moments.mean, moments.std
        elif self.kind == "minmax":
            shift, scale = moments.minimum, moments.maximum - moments.minimum
        else:
            lower, median, upper = sample.quantiles([0.25, 0.5, 0.75])
            shift, scale = median, (upper - lower) / IQR_OF_UNIT_NORMAL
            scale = np.where(scale > 0, scale, moments.std)
        constant = moments.constant | ~(scale > 0)
        if constant.all():
            warnings.warn(f"modality {m!r} is constant on the train split: it carries no information", stacklevel=3)
        elif constant.any():
            warnings.warn(
                f"modality {m!r} is constant on the train split in "
                f"{column_names(self.shapes[m], np.flatnonzero(constant).tolist())}; left unscaled (scale 1)",
                stacklevel=3,
            )
        if not (np.isfinite(shift).all() and np.isfinite(scale).all()):
            raise DataError(
                f"modality {m!r}: its {self.kind} statistics on the train split are not finite; check its values"
            )
        return shift.astype(np.float32), np.where(constant, 1.0, scale).astype(np.float32)
