"""ResNet-18 (He et al., CVPR 2016) for spectrograms, images and stacks of video frames.

The audio-visual balancing papers (OGM-GE, Peng et al. CVPR 2022, github.com/GeWu-Lab/OGM-GE_CVPR2022;
PMR; MMPareto; ERL-MR) train one ResNet-18 from scratch per modality: a 1-channel one on the log
spectrogram and a 3-channel one on video frames, where every frame goes through the trunk and the
feature maps are averaged over time. Written here from the architecture; no torchvision.
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError
from .base import ENCODERS

FRAME_LAYOUTS = ("CFHW", "FCHW")


class BasicBlock(nn.Module):
    def __init__(self, in_channels: int, channels: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, channels, 3, stride, 1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, 1, 1, bias=False),
            nn.BatchNorm2d(channels),
        )
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride, bias=False), nn.BatchNorm2d(channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


class ResNet18(nn.Module):
    """Input (C, H, W), or frames (C, F, H, W) / (F, C, H, W); output (8·width, grid²) feature map.

    For frames, each frame passes the trunk and the maps are averaged over time before the adaptive
    average pooling to a ``grid``×``grid`` map, which keeps the Euler projection small.
    """

    def __init__(self, in_channels: int, width: int, grid: int, layout: str | None):
        super().__init__()
        self.layout = layout
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, width, 7, 2, 3, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, 1),
        ]
        channels = width
        for stage, stride in enumerate((1, 2, 2, 2)):
            out = width * 2**stage
            layers += [BasicBlock(channels, out, stride), BasicBlock(out, out, 1)]
            channels = out
        self.trunk = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(grid)
        self.output_shape = (channels, grid * grid)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.layout is None:
            return self.pool(self.trunk(x)).flatten(2)
        if self.layout == "CFHW":
            x = x.transpose(1, 2)
        batch, frames = x.shape[:2]
        maps = self.trunk(x.flatten(0, 1))
        maps = maps.view(batch, frames, *maps.shape[1:]).mean(1)
        return self.pool(maps).flatten(2)


@ENCODERS.register("resnet18", "ResNet-18 for (C, H, W) spectrograms/images or (C, F, H, W) frames → (8·width, grid²)")
def resnet18(input_shape: tuple[int, ...], width: int = 64, grid: int = 2, layout: str = "CFHW") -> nn.Module:
    """``width`` is the first stage's channels (64 in ResNet-18); ``layout`` names the axes of a 4-D frame
    stack. ``in_channels`` comes from the sample shape."""
    if width < 1 or grid < 1:
        raise ConfigError(f"resnet18 needs width >= 1 and grid >= 1, got width={width}, grid={grid}")
    if len(input_shape) == 3:
        return ResNet18(input_shape[0], width, grid, None)
    if len(input_shape) == 4:
        if layout not in FRAME_LAYOUTS:
            raise ConfigError(f"resnet18 layout must be one of {FRAME_LAYOUTS}, got {layout!r}")
        return ResNet18(input_shape[layout.index("C")], width, grid, layout)
    raise ConfigError(
        f"encoder 'resnet18' takes samples shaped (C, H, W) or frame stacks (C, F, H, W), got {tuple(input_shape)}"
    )
