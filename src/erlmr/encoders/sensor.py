"""Encoders for wearable-sensor windows and skeleton sequences.

``sensor_cnn`` is the per-modality USC-HAD encoder of the ERL-MR authors' code (Han et al., ACM MM 2024,
github.com/Weixiang-Han/ERL-MR-Harnessing-the-Power-of-Euler-Feature-Representations-for-Balanced-
Multi-modal-Learning), which takes it from Harmony (Ouyang et al., MobiSys 2023): a (3, T) window is
treated as a one-channel image and passes 2×2, 2×2, 1×1 and 1×1 convolutions. Written here from that
description.

``skeleton`` follows the idea of the co-occurrence network (HCN, Li et al., IJCAI 2018): convolve
each joint's coordinates over time, then make the joints the channels so later layers see all joints
at once.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError
from .base import ENCODERS

SENSOR_WIDTHS = (64, 64, 32, 16)
SENSOR_KERNELS = (2, 2, 1, 1)


class SensorCNN(nn.Module):
    """(C, T) → (16, (C-2)·(T-2)); for a 3-axis window of 200 steps, (16, 198) = 3168 features."""

    def __init__(self, channels: int, steps: int, dropout: float):
        super().__init__()
        layers: list[nn.Module] = []
        width = 1
        for layer, (out, kernel) in enumerate(zip(SENSOR_WIDTHS, SENSOR_KERNELS)):
            layers += [nn.Conv2d(width, out, kernel), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
            if layer < len(SENSOR_WIDTHS) - 1:
                layers.append(nn.Dropout(dropout))
            width = out
        self.net = nn.Sequential(*layers)
        self.output_shape = (SENSOR_WIDTHS[-1], (channels - 2) * (steps - 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.unsqueeze(1)).flatten(2)


@ENCODERS.register("sensor_cnn", "the ERL-MR authors' sensor CNN for (C, T) windows, output (16, (C-2)(T-2))")
def sensor_cnn(input_shape: tuple[int, ...], dropout: float = 0.5) -> nn.Module:
    if len(input_shape) != 2 or min(input_shape) < 3:
        raise ConfigError(f"encoder 'sensor_cnn' takes windows shaped (C, T) with C, T >= 3, got {tuple(input_shape)}")
    if not 0 <= dropout < 1:
        raise ConfigError(f"sensor_cnn dropout must be in [0, 1), got {dropout}")
    return SensorCNN(input_shape[0], input_shape[1], dropout)


def conv_block(conv: nn.Module, channels: int) -> list[nn.Module]:
    return [conv, nn.BatchNorm2d(channels), nn.ReLU(inplace=True)]


class SkeletonEncoder(nn.Module):
    """(J, 3, T) joint coordinates over time → (channels, positions)."""

    def __init__(self, joints: int, coordinates: int, channels: int, positions: int):
        super().__init__()
        half = max(channels // 2, 1)
        # Point level: every joint's coordinates, shared weights across joints, over time.
        self.points = nn.Sequential(
            *conv_block(nn.Conv2d(coordinates, channels, 1), channels),
            *conv_block(nn.Conv2d(channels, half, (3, 1), padding=(1, 0)), half),
        )
        # Co-occurrence level: joints become channels, so every filter mixes all joints.
        self.joints = nn.Sequential(
            *conv_block(nn.Conv2d(joints, channels, 3, padding=1), channels),
            nn.MaxPool2d((2, 1), ceil_mode=True),
            *conv_block(nn.Conv2d(channels, channels, 3, padding=1), channels),
        )
        self.pool = nn.AdaptiveAvgPool1d(positions)
        self.output_shape = (channels, positions)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        points = self.points(x.permute(0, 2, 3, 1))  # (B, 3, T, J) → (B, half, T, J)
        maps = self.joints(points.permute(0, 3, 2, 1))  # joints as channels: (B, J, T, half)
        return self.pool(maps.mean(3))


@ENCODERS.register("skeleton", "co-occurrence CNN for skeletons (J, 3, T), output (channels, positions)")
def skeleton(input_shape: tuple[int, ...], channels: int = 64, positions: int = 4) -> nn.Module:
    if len(input_shape) != 3:
        raise ConfigError(f"encoder 'skeleton' takes samples shaped (joints, coordinates, T), got {tuple(input_shape)}")
    if channels < 1 or positions < 1:
        raise ConfigError(f"skeleton needs channels >= 1 and positions >= 1, got {channels}, {positions}")
    return SkeletonEncoder(input_shape[0], input_shape[1], channels, positions)
