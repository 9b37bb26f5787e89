"""Grouped data: the validation split drawn from train holds out whole groups, about the asked share,
stratified by class where the groups allow; the array folder's `group` array is validated."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from erlmr.data import load_dataset
from erlmr.data.base import grouped_split
from erlmr.errors import DataError


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 40), st.integers(1, 12), st.integers(2, 5), st.floats(0.05, 0.5), st.integers(0, 2**16))
def test_no_group_is_on_both_sides_and_every_sample_is_on_one(groups, size, classes, fraction, seed):
    rng = np.random.default_rng(seed)
    group = np.repeat(rng.permutation(groups * 3)[:groups], rng.integers(1, size + 1, groups))
    labels = rng.integers(0, classes, len(group))
    keep, held = grouped_split(labels, group, fraction, seed)
    assert len(held) and len(keep)
    assert not set(group[keep]) & set(group[held])
    assert np.array_equal(np.sort(np.concatenate([keep, held])), np.arange(len(group)))


def test_the_held_out_share_and_classes_follow_the_fraction_when_groups_are_many():
    rng = np.random.default_rng(0)
    group = np.repeat(np.arange(200), 10)  # 200 recordings of 10 windows, one activity per recording
    labels = np.repeat(rng.integers(0, 4, 200), 10)
    keep, held = grouped_split(labels, group, 0.2, seed=3)
    assert len(held) == pytest.approx(0.2 * len(labels), abs=10)
    held_share = np.bincount(labels[held], minlength=4) / np.bincount(labels, minlength=4)
    np.testing.assert_allclose(held_share, 0.2, atol=0.02)
    other = grouped_split(labels, group, 0.2, seed=4)[1]
    assert not np.array_equal(held, other) and np.array_equal(held, grouped_split(labels, group, 0.2, seed=3)[1])


def test_one_large_group_is_held_out_when_each_group_overshoots():
    keep, held = grouped_split(np.zeros(30), np.repeat([5, 6, 7], [10, 12, 8]), 0.1, 0)
    assert np.array_equal(held, np.arange(22, 30))  # the smallest group: nearest to 10 % of 30


def test_a_single_group_cannot_give_a_validation_split():
    with pytest.raises(DataError, match="the training data has 1 group; give at least two groups, or a val.npz"):
        grouped_split(np.arange(10) % 2, np.zeros(10, int), 0.1, 0)


def write(root, train_group, test_group=None, meta=None):
    root.mkdir(exist_ok=True)
    for name, group in (("train", train_group), ("test", test_group)):
        n = 40 if name == "train" else 20
        arrays = {
            "a": np.random.default_rng(n).standard_normal((n, 3)),
            "b": np.ones((n, 2, 4)),
            "label": np.arange(n) % 2,
        }
        if group is not None:
            arrays["group"] = group
        np.savez(root / f"{name}.npz", **arrays)
    if meta:
        (root / "meta.json").write_text(json.dumps(meta))
    return str(root)


def test_array_folder_groups_are_kept_apart_and_not_a_modality(tmp_path):
    splits = load_dataset("arrays", write(tmp_path / "d", np.arange(40) // 4, 100 + np.arange(20) // 4), 0, 0.25, {})
    assert splits.modalities == ["a", "b"]
    assert not set(splits.groups["train"]) & set(splits.groups["val"]) and len(splits.val) % 4 == 0
    assert set(splits.groups["test"]) == set(range(100, 105))


@pytest.mark.parametrize(
    "group, meta, message",
    [
        (
            np.arange(40) / 2,
            None,
            r"train\.npz: 'group' must be a 1-D integer array with one group id per sample \(40\), got dtype float64",
        ),
        (np.arange(39), None, r"got dtype int64 and shape \(39,\)"),
        (np.arange(40), {"modalities": ["a", "group"]}, r"must not include 'label' or 'group'"),
        (np.zeros(40, int), None, r"the training data has 1 group"),
    ],
)
def test_bad_group_arrays_are_refused(tmp_path, group, meta, message):
    with pytest.raises(DataError, match=message):
        load_dataset("arrays", write(tmp_path / "d", group, meta=meta), 0, 0.1, {})
