"""The reference code's training-time image augmentation, applied per batch on the device.

What each reference does (read in its dataset class):

* CREMA-D and VGGSound in OGM-GE (Peng et al., CVPR 2022, github.com/GeWu-Lab/OGM-GE_CVPR2022,
  ``dataset/CramedDataset.py``, ``dataset/VGGSoundDataset.py``), AVE in PMR (Fan et al., CVPR 2023,
  github.com/fanyunfeng-bit/Modal-Imbalance-PMR, ``dataset/AVEDataset.py``) and Kinetics-Sounds in
  BalanceBenchmark (github.com/GeWu-Lab/BalanceBenchmark, ``balancemm/datasets/KS_dataset.py``): at
  training ``RandomResizedCrop(224)`` (torchvision's defaults: area scale 0.08-1, aspect ratio 3/4-4/3)
  then ``RandomHorizontalFlip()`` (p = 0.5); at test ``Resize((224, 224))`` of the whole frame.
* UCF101 in BalanceBenchmark (``balancemm/datasets/ucf101_dataset.py``): at training ``Resize((224,
  224))`` then ``RandomHorizontalFlip()``, for the RGB frames and each flow image alike (the flow's x
  component is not negated when flipped); at test the resize alone.

None of them centre-crops at test: the test view is the whole frame resized to a square, which is what
the cache stores (:func:`erlmr.data.media.read_frames`). So evaluation needs no transform, and
training draws the crop and flip here, from the stored frames, once per batch on the batch's device.
Every image is transformed on its own, as in the references, which call the transform per frame.

The randomness comes from (seed, epoch, step) alone, through a generator made for the batch, never
from a global RNG: a run is deterministic per seed, differs from epoch to epoch and resumes exactly
mid-epoch. The parameters are drawn on the CPU, so CPU and CUDA runs crop alike.

Differences from the references: the crop is drawn on the stored square, so its aspect ratio is that
of stored pixels (the references measure it on the original frame) and a small crop is enlarged from
the stored resolution rather than cut from the full-resolution frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import DataError


class BatchAugment(Protocol):
    """A dataset's training-time augmentation: a function of the batch and its position in training."""

    def __call__(
        self, inputs: dict[str, torch.Tensor], seed: int, epoch: int, step: int
    ) -> dict[str, torch.Tensor]: ...


def batch_generator(seed: int, epoch: int, step: int, stream: int) -> torch.Generator:
    """A CPU generator seeded by the batch's position; ``stream`` separates the modalities."""
    entropy = [seed % 2**63, epoch, step, stream]
    high, low = np.random.SeedSequence(entropy).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(high) << 32 | int(low))


def as_images(x: torch.Tensor) -> torch.Tensor:
    """A batch of images (B, C, H, W) or of frame stacks (B, C, F, H, W) as (N, C, H, W) images."""
    if x.dim() == 5:
        return x.transpose(1, 2).reshape(-1, x.shape[1], *x.shape[-2:])
    if x.dim() == 4:
        return x
    raise DataError(f"image augmentation needs (B, C, H, W) or (B, C, F, H, W) batches, got shape {tuple(x.shape)}")


def from_images(images: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    if len(shape) == 5:
        return images.reshape(shape[0], shape[2], shape[1], *shape[-2:]).transpose(1, 2).contiguous()
    return images


@dataclass(frozen=True)
class FrameAugment:
    """torchvision's ``RandomResizedCrop`` (when ``resized_crop``) and ``RandomHorizontalFlip`` (when
    ``flip``) for the frame modalities named, each image on its own, at the stored size.

    Call it as ``augment(inputs, seed, epoch, step)``; other modalities pass through unchanged.
    """

    modalities: tuple[str, ...]
    resized_crop: bool = True
    flip: bool = True
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    attempts: int = 10  # torchvision's: tries before falling back to the whole image

    def __call__(self, inputs: dict[str, torch.Tensor], seed: int, epoch: int, step: int) -> dict[str, torch.Tensor]:
        augmented = dict(inputs)
        for stream, m in enumerate(self.modalities):
            augmented[m] = self.transform(inputs[m], batch_generator(seed, epoch, step, stream))
        return augmented

    def transform(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        images = as_images(x)
        count, _, height, width = images.shape
        flips = torch.rand(count, generator=generator) < 0.5 if self.flip else torch.zeros(count, dtype=torch.bool)
        if self.resized_crop:
            result = crop_and_resize(images, self.crop_boxes(count, height, width, generator), flips)
        else:
            result = torch.where(flips.to(images.device).view(-1, 1, 1, 1), images.flip(-1), images)
        return from_images(result, x.shape)

    def crop_boxes(self, count: int, height: int, width: int, generator: torch.Generator) -> torch.Tensor:
        """(count, 4) boxes (top, left, h, w) drawn as torchvision's ``RandomResizedCrop.get_params``:
        the first of ``attempts`` draws that fits, else the whole image (clamped to ``ratio``)."""
        area = height * width
        draws = torch.rand(count, self.attempts, 2, generator=generator, dtype=torch.float64)
        target = area * (self.scale[0] + (self.scale[1] - self.scale[0]) * draws[..., 0])
        low, high = math.log(self.ratio[0]), math.log(self.ratio[1])
        aspect = torch.exp(low + (high - low) * draws[..., 1])
        w = torch.round(torch.sqrt(target * aspect))
        h = torch.round(torch.sqrt(target / aspect))
        fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
        first = fits.to(torch.uint8).argmax(dim=1, keepdim=True)
        w, h = w.gather(1, first)[:, 0], h.gather(1, first)[:, 0]
        fallback_h, fallback_w = self.whole_image(height, width)
        found = fits.any(dim=1)
        h = torch.where(found, h, torch.full_like(h, fallback_h))
        w = torch.where(found, w, torch.full_like(w, fallback_w))
        offsets = torch.rand(count, 2, generator=generator, dtype=torch.float64)
        top = torch.where(found, torch.floor(offsets[:, 0] * (height - h + 1)), torch.floor((height - h) / 2))
        left = torch.where(found, torch.floor(offsets[:, 1] * (width - w + 1)), torch.floor((width - w) / 2))
        return torch.stack([top, left, h, w], dim=1)

    def whole_image(self, height: int, width: int) -> tuple[float, float]:
        """torchvision's fallback: the largest centred box whose aspect ratio lies in ``ratio``."""
        shape = width / height
        if shape < self.ratio[0]:
            return float(round(width / self.ratio[0])), float(width)
        if shape > self.ratio[1]:
            return float(height), float(round(height * self.ratio[1]))
        return float(height), float(width)


def box_coordinates(start: torch.Tensor, length: torch.Tensor, size: int, mirror: torch.Tensor) -> torch.Tensor:
    """(N, size) sampling positions, in ``grid_sample``'s [-1, 1] units, of ``size`` output pixels
    spread over each box [start, start + length) of an axis ``size`` pixels long. Output pixel centres
    map onto the box as a resize does (centres to centres), clamped to the box's outer pixel centres so
    that nothing outside the crop is read (crop, then resize); ``mirror`` reverses the order."""
    fraction = (torch.arange(size, dtype=torch.float64) + 0.5) / size
    fraction = torch.where(mirror[:, None], 1 - fraction, fraction)
    pixels = start[:, None] + fraction * length[:, None]
    pixels = torch.minimum(torch.maximum(pixels, start[:, None] + 0.5), (start + length)[:, None] - 0.5)
    return 2 * pixels / size - 1


def crop_and_resize(images: torch.Tensor, boxes: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
    """Each image's box (top, left, h, w) resized bilinearly to the image's size, mirrored where
    ``flips``: one ``grid_sample`` for the whole batch. The whole-image box returns the image itself."""
    count, _, height, width = images.shape
    top, left, h, w = boxes.T
    rows = box_coordinates(top, h, height, torch.zeros_like(flips))
    columns = box_coordinates(left, w, width, flips)
    grid = torch.stack([columns[:, None, :].expand(-1, height, -1), rows[:, :, None].expand(-1, -1, width)], dim=-1)
    grid = grid.to(images.device, images.dtype)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
