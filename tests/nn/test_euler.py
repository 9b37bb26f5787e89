import math

import pytest
import torch

from erlmr import ConfigError, DataError, EulerRepresentation


def test_unit_magnitude_gives_unit_modulus_before_projection():
    euler = EulerRepresentation([(4, 5), (4, 5)], out_features=6)
    features = [torch.randn(3, 4, 5) * 3, torch.randn(3, 4, 5) * 3]
    real, imag = euler.complex_parts(features)
    for r, i in zip(real, imag):
        assert r.shape == (3, 20)
        torch.testing.assert_close(r**2 + i**2, torch.ones_like(r))


def test_magnitude_is_per_channel_and_scales_the_modulus():
    euler = EulerRepresentation([(2, 3), (2, 3)], out_features=4)
    with torch.no_grad():
        euler.magnitudes[0].copy_(torch.tensor([2.0, 0.5]))
    real, imag = euler.complex_parts([torch.randn(1, 2, 3), torch.randn(1, 2, 3)])
    modulus = (real[0] ** 2 + imag[0] ** 2).sqrt().view(2, 3)
    torch.testing.assert_close(modulus, torch.tensor([[2.0] * 3, [0.5] * 3]))
    torch.testing.assert_close((real[1] ** 2 + imag[1] ** 2), torch.ones(1, 6))


def test_gradients_reach_magnitudes_and_shared_projection():
    euler = EulerRepresentation([(4, 5), (4, 5)], out_features=6, dropout=0.0)
    out = euler([torch.randn(8, 4, 5), torch.randn(8, 4, 5)])
    sum(f.sum() for f in out.features).backward()
    for magnitude in euler.magnitudes:
        assert magnitude.grad is not None and magnitude.grad.abs().sum() > 0
    assert euler.projection.weight.grad.abs().sum() > 0


def test_features_are_real_then_imag_and_phase_is_their_angle():
    euler = EulerRepresentation([(8,), (8,)], out_features=5, dropout=0.0).eval()
    out = euler([torch.randn(4, 8), torch.randn(4, 8)])
    for feature, phase, real, imag in zip(out.features, out.phases, out.real, out.imag):
        assert feature.shape == (4, 10)
        torch.testing.assert_close(feature, torch.cat([real, imag], dim=1))
        torch.testing.assert_close(phase, torch.atan2(imag, real))
        # ReLU before atan2 keeps both parts >= 0, so the phase lies in [0, pi/2].
        assert phase.min() >= 0 and phase.max() <= math.pi / 2 + 1e-6


def test_projection_is_shared_across_modalities_and_parts():
    euler = EulerRepresentation([(3,), (3,)], out_features=2, dropout=0.0)
    assert sum(isinstance(m, torch.nn.Linear) for m in euler.modules()) == 1
    x = torch.randn(5, 3)
    out = euler([x, x])
    torch.testing.assert_close(out.features[0], out.features[1])


def test_mismatched_flattened_sizes_need_per_modality_projections():
    with pytest.raises(ConfigError, match="shared_projection=False"):
        EulerRepresentation([(4, 5), (4, 6)], out_features=6)
    euler = EulerRepresentation([(4, 5), (4, 6)], out_features=6, shared_projection=False)
    out = euler([torch.randn(2, 4, 5), torch.randn(2, 4, 6)])
    assert [f.shape for f in out.features] == [(2, 12), (2, 12)]


def test_wrong_input_shape_is_a_clear_error():
    euler = EulerRepresentation([(4, 5), (4, 5)], out_features=6)
    with pytest.raises(DataError, match=r"modality 1: expected features of shape \(batch, 4, 5\)"):
        euler([torch.randn(2, 4, 5), torch.randn(2, 5, 4)])
    with pytest.raises(ConfigError, match="dropout"):
        EulerRepresentation([(4,), (4,)], out_features=2, dropout=1.0)
