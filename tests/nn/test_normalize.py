"""InputNormalizer: streamed statistics equal the whole-array ones, constant and non-finite features are
named, memory-mapped splits are read in batches, and the statistics travel in the state dict."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from erlmr.config import load_config
from erlmr.data import Split
from erlmr.errors import ConfigError, DataError
from erlmr.nn import normalize
from erlmr.nn.normalize import InputNormalizer

RNG = np.random.default_rng(0)
SHAPES = {"vec": (5,), "seq": (3, 7), "img": (2, 4, 4)}


def raw_split(rows: int = 300) -> Split:
    """Features on scales from 0.01 to 10^4 and with offsets: what a one-pass sum of squares gets wrong."""
    inputs = {}
    for m, shape in SHAPES.items():
        channels = shape[0]
        scale = np.logspace(-2, 4, channels).reshape((channels,) + (1,) * (len(shape) - 1))
        offset = np.linspace(-100, 300, channels).reshape(scale.shape)
        inputs[m] = torch.from_numpy((offset + scale * RNG.standard_normal((rows, *shape))).astype(np.float32))
    return Split(inputs, torch.arange(rows) % 3)


def channel_view(x: np.ndarray) -> np.ndarray:
    return x.T if x.ndim == 2 else np.moveaxis(x, 1, 0).reshape(x.shape[1], -1)


@pytest.mark.parametrize("batch_values", [7, 200, 10**6])  # one row per batch ... the whole split at once
def test_streamed_statistics_equal_the_whole_split(batch_values, monkeypatch):
    split = raw_split()
    monkeypatch.setattr(normalize, "BATCH_VALUES", batch_values)
    for kind in ("standard", "minmax"):
        normalizer = InputNormalizer(SHAPES, kind)
        normalizer.fit_split(split)
        for m in SHAPES:
            values = channel_view(split.inputs[m].numpy().astype(np.float64))
            shift, scale = (t.flatten().numpy() for t in normalizer.statistics(m))
            if kind == "standard":
                expected = values.mean(1), values.std(1)
            else:
                expected = values.min(1), values.max(1) - values.min(1)
            np.testing.assert_allclose(shift, expected[0], rtol=1e-6, atol=1e-6)
            np.testing.assert_allclose(scale, expected[1], rtol=1e-5)
            out = normalizer({m: split.inputs[m]})[m].numpy()
            out = channel_view(out.astype(np.float64))
            if kind == "standard":
                np.testing.assert_allclose(out.mean(1), 0, atol=1e-3)
                np.testing.assert_allclose(out.std(1), 1, rtol=1e-3)
            else:
                np.testing.assert_allclose([out.min(1), out.max(1)], [np.zeros(len(out)), np.ones(len(out))], atol=1e-4)


def test_robust_scaling_ignores_outliers_that_ruin_standard_scaling():
    x = RNG.standard_normal((4000, 2)).astype(np.float32)
    x[:40, 0] = 1e6  # 1 % of one feature corrupted
    split = Split(
        {"a": torch.from_numpy(x), "b": torch.zeros(4000, 1) + torch.arange(4000.0)[:, None]}, torch.zeros(4000)
    )
    robust, standard = (
        InputNormalizer({"a": (2,), "b": (1,)}, "robust"),
        InputNormalizer({"a": (2,), "b": (1,)}, "standard"),
    )
    robust.fit_split(split)
    standard.fit_split(split)
    shift, scale = robust.statistics("a")
    assert abs(float(shift[0])) < 0.1 and 0.9 < float(scale[0]) < 1.15  # median and IQR/1.349 of the clean part
    assert float(standard.statistics("a")[1][0]) > 1e4  # the std is ruined by the outliers
    np.testing.assert_allclose(float(robust.statistics("b")[1][0]), (2999.25 - 999.75) / 1.349, rtol=0.01)


def test_robust_scale_falls_back_to_the_std_where_the_iqr_is_zero():
    x = np.zeros((1000, 1), np.float32)
    x[::20] = 5.0  # a sparse feature: 95 % zeros, so its IQR is 0
    normalizer = InputNormalizer({"a": (1,)}, "robust")
    normalizer.fit_split(Split({"a": torch.from_numpy(x)}, torch.zeros(1000)))
    assert float(normalizer.statistics("a")[1][0]) == pytest.approx(float(x.std()), rel=1e-5)


def test_robust_subsample_is_seeded_and_bounded(monkeypatch):
    monkeypatch.setattr(normalize, "ROBUST_VALUES", 50 * 5)  # 50 rows of the 5-feature modality
    split = raw_split(1000)
    fits = []
    for seed in (0, 0, 1):
        normalizer = InputNormalizer({"vec": (5,)}, "robust")
        normalizer.fit_split(split, seed=seed)
        fits.append(normalizer.statistics("vec")[0].clone())
    assert torch.equal(fits[0], fits[1]) and not torch.equal(fits[0], fits[2])


def test_a_memory_mapped_split_is_read_in_batches_never_whole(tmp_path, monkeypatch):
    values = RNG.standard_normal((500, 3, 8)).astype(np.float32) * 100 + 7
    np.save(tmp_path / "seq.npy", values)
    store = torch.from_numpy(np.load(tmp_path / "seq.npy", mmap_mode="c"))
    rows = np.arange(0, 500, 2)  # the split owns every other row of the store
    split = Split({"seq": store}, torch.zeros(len(rows)), torch.from_numpy(rows))
    gathered = []
    original = Split.__getitems__
    monkeypatch.setattr(Split, "__getitems__", lambda self, index: gathered.append(len(index)) or original(self, index))
    monkeypatch.setattr(normalize, "BATCH_VALUES", 24 * 40)  # 40 rows of 24 values per batch
    normalizer = InputNormalizer({"seq": (3, 8)})
    normalizer.fit_split(split)
    assert max(gathered) == 40 and sum(gathered) == len(rows)
    owned = values[rows]
    np.testing.assert_allclose(normalizer.statistics("seq")[0].flatten(), owned.mean(axis=(0, 2)), rtol=1e-5)


def test_constant_features_keep_scale_one_and_are_named():
    x = RNG.standard_normal((50, 4)).astype(np.float32)
    x[:, [1, 3]] = 7.0
    normalizer = InputNormalizer({"tab": (4,), "flat": (2, 3)})
    split = Split({"tab": torch.from_numpy(x), "flat": torch.full((50, 2, 3), 2.5)}, torch.zeros(50))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        normalizer.fit_split(split)
    messages = [str(w.message) for w in caught]
    assert "modality 'tab' is constant on the train split in features 1, 3; left unscaled (scale 1)" in messages
    assert "modality 'flat' is constant on the train split: it carries no information" in messages
    out = normalizer(split.inputs)
    assert torch.equal(out["tab"][:, [1, 3]], torch.zeros(50, 2)) and torch.equal(out["flat"], torch.zeros(50, 2, 3))
    assert torch.isfinite(out["tab"]).all()


def test_nonfinite_training_values_are_refused_naming_modality_and_column():
    x = torch.ones(20, 2, 5)
    x[3, 1, 2] = float("inf")
    x[:, 0] = torch.arange(20.0)[:, None]
    normalizer = InputNormalizer({"seq": (2, 5)})
    with pytest.raises(
        DataError, match=r"modality 'seq' has NaN or Inf on the train split in channel 1; clean or drop"
    ):
        normalizer.fit_split(Split({"seq": x}, torch.zeros(20)))


def test_statistics_travel_in_the_state_dict():
    split = raw_split()
    fitted = InputNormalizer(SHAPES, "standard")
    fitted.fit_split(split)
    fresh = InputNormalizer(SHAPES, "standard")
    assert not torch.equal(fresh(split.inputs)["img"], fitted(split.inputs)["img"])
    fresh.load_state_dict(fitted.state_dict())
    assert sorted(fitted.state_dict()) == [f"{k}_{i}" for k in ("scale", "shift") for i in range(3)]
    for m in SHAPES:
        assert torch.equal(fresh(split.inputs)[m], fitted(split.inputs)[m])


def test_unknown_kind_is_a_config_error():
    with pytest.raises(ConfigError, match=r"unknown input normalisation 'zscore'; valid: standard, robust, minmax"):
        InputNormalizer({"a": (3,)}, "zscore")


def test_data_normalize_is_validated_in_the_config():
    assert load_config(None, ["data.normalize=robust"]).data.normalize == "robust"
    with pytest.raises(
        ConfigError, match=r"unknown data.normalize 'zscore'; valid: auto, standard, robust, minmax, none"
    ):
        load_config(None, ["data.normalize=zscore"])
