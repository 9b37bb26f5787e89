"""ResNet-18 (He et al., CVPR 2016) for spectrograms, images and stacks of video frames.

The audio-visual balancing papers (OGM-GE, Peng et al. CVPR 2022, github.com/GeWu-Lab/OGM-GE_CVPR2022;
PMR; MMPareto; ERL-MR) train one ResNet-18 from scratch per modality: a 1-channel one on the log
spectrogram and a 3-channel one on video frames, where every frame goes through the trunk and the
feature maps are averaged over time. Written here from the architecture; no torchvision.

``pretrained`` loads a local ResNet-18 state dict in torchvision's key layout (``conv1.weight``,
``bn1.*``, ``layer1.0.conv1.weight`` ... ``fc.*``), e.g. the ImageNet file torchvision downloads
(``resnet18-f37072fd.pth``); nothing is downloaded. See :func:`load_torchvision_weights`.
"""

from __future__ import annotations

from pathlib import Path
from typing import cast

import torch
from torch import nn

from ..errors import CheckpointError, ConfigError
from .base import ENCODERS

# Our module names → torchvision's, for the stem and the blocks; the trunk holds the stem at 0 and 1
# (conv1, bn1) and the eight blocks from index 4 on (layer1.0, layer1.1, ..., layer4.1).
STEM_NAMES = {"0": "conv1", "1": "bn1"}
BLOCK_NAMES = {
    "body.0": "conv1",
    "body.1": "bn1",
    "body.3": "conv2",
    "body.4": "bn2",
    "shortcut.0": "downsample.0",
    "shortcut.1": "downsample.1",
}
FIRST_BLOCK = 4
CLASSIFIER_PREFIX = "fc."  # ImageNet's classifier: the encoder has none, so it is ignored

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
        self.shortcut: nn.Module = nn.Identity()
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


def torchvision_name(name: str) -> str:
    """torchvision's key for a key of our trunk's state dict: ``5.body.3.weight`` → ``layer1.1.conv2.weight``."""
    index, rest = name.split(".", 1)
    if int(index) < FIRST_BLOCK:
        return f"{STEM_NAMES[index]}.{rest}"
    stage, block = divmod(int(index) - FIRST_BLOCK, 2)
    part, number, leaf = rest.split(".", 2)
    return f"layer{stage + 1}.{block}.{BLOCK_NAMES[f'{part}.{number}']}.{leaf}"


def adapt_input_channels(kernel: torch.Tensor, channels: int, path: Path) -> torch.Tensor:
    """The first convolution's kernel for ``channels`` input channels from an RGB (3-channel) one.

    One channel gets the sum of the RGB kernels: on a grey image it then responds exactly as the RGB
    network does on that image repeated in three channels (mean would scale the response by 1/3 and put
    the first batch norm's statistics off).
    """
    if kernel.shape[1] == channels:
        return kernel
    if channels == 1 and kernel.shape[1] == 3:
        return kernel.sum(dim=1, keepdim=True)
    raise CheckpointError(
        f"{path}: conv1.weight takes {kernel.shape[1]} input channels, this modality has {channels}; "
        "pretrained weights adapt to 1 channel (RGB kernels summed) or take 3"
    )


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise ConfigError(f"resnet18 option pretrained={str(path)!r}: no such file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a full pickled model, a damaged file, not a torch file at all
        raise CheckpointError(
            f"{path} cannot be read as a state dict of tensors ({type(error).__name__}: {error}); "
            "pretrained needs a ResNet-18 state dict in torchvision's layout (conv1.weight, bn1.*, layer1.0.*, ...)"
        ) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} is not a state dict (a mapping of names to tensors)")
    return state


def load_torchvision_weights(model: ResNet18, path: str | Path) -> None:
    """Copy a torchvision-layout ResNet-18 state dict into ``model``'s trunk; ``fc.*`` is ignored.

    Every trunk tensor must be there with its shape (``num_batches_tracked`` may be absent, as in
    torchvision's own ImageNet file); a missing or unexpected key is an error that names it.
    """
    path = Path(path).expanduser()
    state = read_state_dict(path)
    ours = {torchvision_name(k): k for k in model.trunk.state_dict()}
    given = {k for k in state if not k.startswith(CLASSIFIER_PREFIX)}
    missing = sorted(k for k in set(ours) - given if not k.endswith("num_batches_tracked"))
    unexpected = sorted(given - set(ours))
    if missing or unexpected:
        raise CheckpointError(
            f"{path} does not hold a torchvision ResNet-18: missing keys {listing(missing)}, "
            f"unexpected keys {listing(unexpected)}"
        )
    renamed = {ours[k]: state[k] for k in given}
    renamed["0.weight"] = adapt_input_channels(renamed["0.weight"], cast(nn.Conv2d, model.trunk[0]).in_channels, path)
    expected = model.trunk.state_dict()
    wrong = [
        f"{k} is {tuple(renamed[o].shape)}, needs {tuple(expected[o].shape)}"
        for k, o in ours.items()
        if o in renamed and renamed[o].shape != expected[o].shape
    ]
    if wrong:
        raise CheckpointError(f"{path}: tensors of the wrong shape: {listing(wrong)}; pretrained weights need width=64")
    model.trunk.load_state_dict(renamed, strict=False)


def listing(names: list[str], shown: int = 6) -> str:
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return f"[{', '.join(names[:shown])}{more}]" if names else "none"


@ENCODERS.register("resnet18", "ResNet-18 for (C, H, W) spectrograms/images or (C, F, H, W) frames → (8·width, grid²)")
def resnet18(
    input_shape: tuple[int, ...], width: int = 64, grid: int = 2, layout: str = "CFHW", pretrained: str | None = None
) -> nn.Module:
    """``width`` is the first stage's channels (64 in ResNet-18); ``layout`` names the axes of a 4-D frame
    stack. ``in_channels`` comes from the sample shape. ``pretrained`` is the path of a local
    torchvision-layout ResNet-18 state dict (e.g. ImageNet's); a 1-channel modality gets the RGB
    kernels of ``conv1`` summed."""
    if width < 1 or grid < 1:
        raise ConfigError(f"resnet18 needs width >= 1 and grid >= 1, got width={width}, grid={grid}")
    if len(input_shape) == 3:
        model = ResNet18(input_shape[0], width, grid, None)
    elif len(input_shape) == 4:
        if layout not in FRAME_LAYOUTS:
            raise ConfigError(f"resnet18 layout must be one of {FRAME_LAYOUTS}, got {layout!r}")
        model = ResNet18(input_shape[layout.index("C")], width, grid, layout)
    else:
        raise ConfigError(
            f"encoder 'resnet18' takes samples shaped (C, H, W) or frame stacks (C, F, H, W), got {tuple(input_shape)}"
        )
    if pretrained is not None:
        load_torchvision_weights(model, pretrained)
    return model
