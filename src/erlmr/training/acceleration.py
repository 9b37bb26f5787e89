"""Mixed precision and compilation of the training step: ``train.amp`` and ``train.compile``.

``train.amp`` runs each training step (forward, losses, backward) under bf16 autocast; bf16 keeps
float32's exponent range, so no loss scaling is needed. Unset, it is on for CUDA devices that support
bf16 and off on CPU. Evaluation always runs in float32. ``train.compile`` passes the model of the
training step through ``torch.compile`` (off by default: compiling takes minutes on a CPU).
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import ContextManager

import torch
from torch import nn

from ..errors import ConfigError


def resolve_amp(option: bool | None, device: torch.device) -> bool:
    bf16_cuda = device.type == "cuda" and torch.cuda.is_bf16_supported()
    if option is None:
        return bf16_cuda
    if option and device.type == "cuda" and not bf16_cuda:
        raise ConfigError(f"train.amp needs bf16, which {torch.cuda.get_device_name(device)} lacks; set train.amp: false")
    return option


def autocast(device: torch.device, enabled: bool) -> ContextManager:
    return torch.autocast(device.type, dtype=torch.bfloat16) if enabled else nullcontext()


def compiled(model: nn.Module, enabled: bool) -> nn.Module:
    return torch.compile(model) if enabled else model
