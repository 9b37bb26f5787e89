import numpy as np
import pytest
import torch

from erlmr import ConfigError, TrainingDivergedError, min_norm_weights
from erlmr.nn.pareto import normalize_gradients


def brute_force_min_norm(grads: np.ndarray, samples: int = 200_000) -> float:
    weights = np.random.default_rng(0).dirichlet(np.ones(len(grads)), samples)
    corners = np.eye(len(grads))
    return float(np.linalg.norm(np.vstack([weights, corners]) @ grads, axis=1).min())


@pytest.mark.parametrize("m", [2, 3])
@pytest.mark.parametrize("seed", range(4))
def test_min_norm_matches_brute_force_search_over_the_simplex(m, seed):
    grads = torch.randn(m, 12, generator=torch.Generator().manual_seed(seed))
    weights = min_norm_weights(list(grads))
    assert weights.shape == (m,)
    assert (weights >= 0).all() and weights.sum().item() == pytest.approx(1.0, abs=1e-6)
    ours = (weights.double() @ grads.double()).norm().item()
    assert ours <= brute_force_min_norm(grads.numpy().astype(np.float64)) + 1e-5


def test_two_gradients_use_the_closed_form():
    g1, g2 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0])
    # min |w g1 + (1-w) g2|^2 = w^2 + 4(1-w)^2 is at w = 0.8
    torch.testing.assert_close(min_norm_weights([g1, g2]), torch.tensor([0.8, 0.2]))
    # Aligned gradients: the shorter one alone is the min-norm point.
    torch.testing.assert_close(
        min_norm_weights([torch.tensor([1.0, 1.0]), torch.tensor([3.0, 3.0])]), torch.tensor([1.0, 0.0])
    )


def test_normalizations():
    grads = torch.tensor([[3.0, 4.0], [0.0, 2.0]], dtype=torch.float64)
    losses = torch.tensor([2.0, 4.0], dtype=torch.float64)
    torch.testing.assert_close(normalize_gradients(grads, losses, "l2").norm(dim=1), torch.ones(2, dtype=torch.float64))
    torch.testing.assert_close(normalize_gradients(grads, losses, "loss"), grads / losses[:, None])
    torch.testing.assert_close(
        normalize_gradients(grads, losses, "loss+"), grads / torch.tensor([[10.0], [8.0]], dtype=torch.float64)
    )
    torch.testing.assert_close(normalize_gradients(grads, losses, "none"), grads)
    # 'l2' makes the solution independent of gradient scale.
    a = min_norm_weights([torch.tensor([1.0, 0.0]), torch.tensor([0.0, 10.0])], normalization="l2")
    torch.testing.assert_close(a, torch.tensor([0.5, 0.5]))


def test_bad_inputs_are_clear_errors():
    with pytest.raises(ConfigError, match="valid: none, l2, loss, loss\\+"):
        min_norm_weights([torch.ones(2), torch.ones(2)], normalization="max")
    with pytest.raises(ConfigError, match="needs the losses"):
        min_norm_weights([torch.ones(2), torch.ones(2)], normalization="loss")
    with pytest.raises(TrainingDivergedError, match="NaN"):
        min_norm_weights([torch.tensor([float("nan"), 1.0]), torch.ones(2)])
