"""resnet18's ``pretrained`` option: a torchvision-layout state dict, checked against a reference network."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from erlmr import load_run, predict
from erlmr.cli import main
from erlmr.encoders import build_encoder
from erlmr.errors import CheckpointError, ConfigError


class ReferenceBlock(nn.Module):
    """A ResNet basic block under torchvision's attribute names (conv1, bn1, conv2, bn2, downsample)."""

    def __init__(self, in_channels: int, channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.downsample = None
        if stride != 1 or in_channels != channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride, bias=False), nn.BatchNorm2d(channels)
            )

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + identity)


class ReferenceResNet18(nn.Module):
    """ResNet-18 (He et al., CVPR 2016) written independently of erlmr's, with torchvision's state-dict keys."""

    def __init__(self, grid: int = 2):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        widths = [64, 128, 256, 512]
        for stage, width in enumerate(widths, start=1):
            before = widths[max(stage - 2, 0)]
            stride = 1 if stage == 1 else 2
            setattr(
                self,
                f"layer{stage}",
                nn.Sequential(ReferenceBlock(before, width, stride), ReferenceBlock(width, width, 1)),
            )
        self.fc = nn.Linear(512, 1000)
        self.pool = nn.AdaptiveAvgPool2d(grid)

    def forward(self, x):
        x = nn.functional.max_pool2d(torch.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        for stage in range(1, 5):
            x = getattr(self, f"layer{stage}")(x)
        return self.pool(x).flatten(2)  # the feature map erlmr's encoder returns: (B, 512, grid²)


def randomised_reference(seed: int = 0) -> ReferenceResNet18:
    """Random weights and batch-norm statistics everywhere, so that a misplaced tensor changes the output."""
    torch.manual_seed(seed)
    reference = ReferenceResNet18()
    with torch.no_grad():
        for module in reference.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0, 0.1)
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 2.0)
    return reference.eval()


@pytest.fixture(scope="module")
def reference_file(tmp_path_factory) -> tuple[ReferenceResNet18, Path]:
    reference = randomised_reference()
    path = tmp_path_factory.mktemp("weights") / "resnet18-imagenet.pth"
    torch.save(reference.state_dict(), path)
    return reference, path


def save_altered(path: Path, tmp_path: Path, change) -> Path:
    state = torch.load(path, weights_only=True)
    change(state)
    altered = tmp_path / "altered.pth"
    torch.save(state, altered)
    return altered


def test_torchvision_weights_give_the_reference_networks_outputs(reference_file):
    reference, path = reference_file
    encoder = build_encoder("resnet18", (3, 32, 32), {"pretrained": str(path)}).eval()
    fresh = build_encoder("resnet18", (3, 32, 32), {}).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = reference(x)
        assert torch.allclose(encoder(x), expected, atol=1e-5)
        assert not torch.allclose(fresh(x), expected, atol=1e-2)


def test_one_channel_sums_the_rgb_kernels_so_grey_matches_grey_repeated_in_rgb(reference_file):
    reference, path = reference_file
    encoder = build_encoder("resnet18", (1, 32, 32), {"pretrained": str(path)}).eval()
    grey = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(encoder(grey), reference(grey.repeat(1, 3, 1, 1)), atol=1e-4)


def test_frames_run_through_the_pretrained_trunk_and_are_averaged(reference_file):
    reference, path = reference_file
    encoder = build_encoder("resnet18", (3, 2, 32, 32), {"pretrained": str(path), "grid": 1}).eval()
    reference.pool = nn.Identity()  # erlmr averages the frames' maps before pooling
    frames = torch.randn(2, 3, 2, 32, 32)
    with torch.no_grad():
        maps = torch.stack([reference(frames[:, :, f]) for f in range(2)]).mean(0)
    reference.pool = nn.AdaptiveAvgPool2d(2)
    assert torch.allclose(encoder(frames), maps.mean(2, keepdim=True), atol=1e-5)


def test_a_file_without_num_batches_tracked_loads_as_torchvisions_imagenet_file_does(reference_file, tmp_path):
    reference, path = reference_file
    old = save_altered(path, tmp_path, lambda s: [s.pop(k) for k in list(s) if k.endswith("num_batches_tracked")])
    encoder = build_encoder("resnet18", (3, 32, 32), {"pretrained": str(old)}).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(encoder(x), reference(x), atol=1e-5)


def test_missing_unexpected_and_misshapen_tensors_are_named(reference_file, tmp_path):
    _, path = reference_file
    missing = save_altered(path, tmp_path, lambda s: s.pop("layer3.1.conv2.weight"))
    with pytest.raises(CheckpointError, match=r"missing keys \[layer3.1.conv2.weight\], unexpected keys none"):
        build_encoder("resnet18", (3, 32, 32), {"pretrained": str(missing)})
    prefixed = save_altered(path, tmp_path, lambda s: s.update({f"module.{k}": s.pop(k) for k in list(s)}))
    with pytest.raises(
        CheckpointError, match=r"missing keys \[bn1.bias, .* and \d+ more\], unexpected keys \[module.bn1.bias"
    ):
        build_encoder("resnet18", (3, 32, 32), {"pretrained": str(prefixed)})
    with pytest.raises(
        CheckpointError, match=r"wrong shape: \[conv1.weight is \(64, 3, 7, 7\), needs \(32, 3, 7, 7\), .*width=64"
    ):
        build_encoder("resnet18", (3, 32, 32), {"pretrained": str(path), "width": 32})
    with pytest.raises(CheckpointError, match="takes 3 input channels, this modality has 2"):
        build_encoder("resnet18", (2, 32, 32), {"pretrained": str(path)})


def test_a_file_that_is_not_a_state_dict_is_refused_clearly(tmp_path):
    with pytest.raises(ConfigError, match="pretrained='.*nowhere.pth': no such file"):
        build_encoder("resnet18", (3, 32, 32), {"pretrained": str(tmp_path / "nowhere.pth")})
    torch.save(nn.Linear(2, 2), tmp_path / "module.pth")  # a pickled module: not loadable with weights_only
    with pytest.raises(CheckpointError, match="cannot be read as a state dict of tensors"):
        build_encoder("resnet18", (3, 32, 32), {"pretrained": str(tmp_path / "module.pth")})
    torch.save({"conv1.weight": torch.zeros(1), "epoch": 3}, tmp_path / "mixed.pth")
    with pytest.raises(CheckpointError, match="is not a state dict"):
        build_encoder("resnet18", (3, 32, 32), {"pretrained": str(tmp_path / "mixed.pth")})


def test_a_run_started_from_pretrained_weights_loads_and_evaluates_without_the_file(reference_file, tmp_path):
    _, path = reference_file
    weights = tmp_path / "resnet18.pth"
    weights.write_bytes(path.read_bytes())
    rng = np.random.default_rng(0)
    data = tmp_path / "data"
    data.mkdir()
    for split in ("train", "test"):
        np.savez(
            data / f"{split}.npz",
            image=rng.normal(size=(12, 3, 16, 16)).astype(np.float32),
            signal=rng.normal(size=(12, 4)).astype(np.float32),
            label=np.arange(12) % 2,
        )
    run_dir = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--data",
                str(data),
                "--epochs",
                "1",
                "--batch-size",
                "4",
                "--quiet",
                "--device",
                "cpu",
                "--run-dir",
                str(run_dir),
                "--set",
                "model.encoders.image=resnet18",
                "--set",
                f"model.encoder_options.image.pretrained={weights}",
            ]
        )
        == 0
    )
    weights.unlink()
    run = load_run(run_dir)
    assert run.config.model.encoder_options["image"]["pretrained"] == str(weights)  # the record keeps it
    assert predict(run, {"image": np.zeros((2, 3, 16, 16), np.float32)}).probabilities.shape == (2, 2)
    assert main(["eval", str(run_dir), "--device", "cpu"]) == 0
