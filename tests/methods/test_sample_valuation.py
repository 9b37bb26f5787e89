"""sample_valuation: Shapley contributions per sample, copies that train the weak modality alone."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from resumable import train_stop_and_resume

from erlmr.errors import ConfigError
from erlmr.methods.sample_valuation import sample_copies, shapley_contributions
from erlmr.training.step import method_step
from reliability.conftest import at_step  # noqa: F401 (a fixture)
from support import first_batch, method_setup, step_context


@pytest.mark.parametrize("right_a, right_v, right_all", list(itertools.product([0, 1], repeat=3)))
def test_two_modality_contributions_are_the_official_formula(right_a, right_v, right_all):
    correct = torch.tensor([[0], [right_a], [right_v], [right_all]], dtype=torch.bool)  # rows: ∅, {a}, {v}, {a, v}
    phi = shapley_contributions(correct)[0]
    v_a, v_v, v_all = right_a, right_v, 2 * right_all
    assert phi.tolist() == [(v_a + v_all - v_v) / 2, (v_v + v_all - v_a) / 2]


def test_three_modality_contributions_share_the_coalition_value_exactly():
    torch.manual_seed(0)
    correct = torch.rand(8, 50) > 0.5
    phi = shapley_contributions(correct)
    torch.testing.assert_close(phi.sum(1), 3.0 * correct[7].double())  # efficiency: Σ_m φ_m = v(all)
    everything_right = shapley_contributions(torch.ones(8, 1, dtype=torch.bool))
    assert everything_right.tolist() == [[1.0, 1.0, 1.0]]  # exactly the fair share: no copy


def test_copies_follow_the_official_thresholds():
    phi = torch.tensor([[-0.5, 0.0], [0.5, 1.0], [1.5, 0.4], [-0.1, 0.9]])
    assert sample_copies(phi).tolist() == [[3, 2], [1, 0], [0, 0], [0, 1]]


def test_valuation_at_the_end_of_an_epoch_plans_copies_from_coalitions_of_the_model():
    splits, model, method, _ = method_setup("sample_valuation", {"warmup": 2})
    assert method.on_epoch_end(model, 0) == {} and method.epoch_samples(1) is None  # still warming up
    logs = method.on_epoch_end(model, 1)
    model.eval()
    inputs, labels = splits.train.__getitems__(range(len(splits.train)))
    with torch.no_grad():  # coalitions through the model's own "absent" path, not the method's masking
        right = {
            s: model(inputs, absent=[m for m in ("m0", "m1") if m not in s]).logits.argmax(1) == labels
            for s in [("m0",), ("m1",), ("m0", "m1")]
        }
    v_a, v_v, v_all = right[("m0",)].double(), right[("m1",)].double(), 2 * right[("m0", "m1")].double()
    phi = torch.stack([(v_a + v_all - v_v) / 2, (v_v + v_all - v_a) / 2], 1)
    assert torch.equal(method.plan.copies, sample_copies(phi)) and method.plan.copies.any()
    assert logs["sv_copies_m0"] == float(sample_copies(phi)[:, 0].sum())
    samples = method.epoch_samples(2)
    assert torch.equal(torch.bincount(samples, minlength=len(splits.train)), 1 + method.plan.copies.sum(1))


#: the keep row of each role: the original (−1) keeps both modalities, a copy for m keeps m alone
KEEP_ROWS = {-1: [1.0, 1.0], 0: [1.0, 0.0], 1: [0.0, 1.0]}


def planned_method(copies):
    """A method on the small synthetic set whose plan is ``copies`` for the first rows (none for the rest)."""
    splits, model, method, _ = method_setup("sample_valuation", {"warmup": 1})
    plan = torch.zeros(len(splits.train), 2, dtype=torch.long)
    plan[: len(copies)] = torch.tensor(copies)
    method.adopt(plan, 1)
    method.on_epoch_start(model, 1)
    return splits, model, method


def test_each_role_of_a_sample_is_trained_once_per_epoch_in_a_drawn_order():
    _, model, method = planned_method([[2, 1]])  # sample 0: original, two m0-only copies, one m1-only
    block = method.plan.roles[:4].tolist()
    assert sorted(block) == [-1, 0, 0, 1]
    keep = torch.cat([method.keep_masks(torch.tensor([0, 0, 5])), method.keep_masks(torch.tensor([0, 0]))])
    rows = KEEP_ROWS
    assert keep.tolist() == [rows[block[0]], rows[block[1]], [1, 1], rows[block[2]], rows[block[3]]]
    assert method.keep_masks(torch.tensor([0])).tolist() == [[1, 1]]  # a fifth occurrence: no role left
    method.on_epoch_start(model, 2)
    assert method.keep_masks(torch.tensor([0])).tolist() == [rows[block[0]]]  # a new epoch starts over
    orders = set()
    for epoch in range(20):  # the order is drawn per plan: the original is not always first
        method.adopt(method.plan.copies, epoch)
        orders.add(tuple(method.plan.roles[:4].tolist()))
    assert len(orders) > 3 and any(order[0] != -1 for order in orders)


def test_a_step_trains_the_copies_with_their_modality_alone():
    splits, model, method = planned_method([[2, 1]])
    samples = torch.tensor([0, 0, 5, 0])
    inputs, labels = splits.train.__getitems__(samples.tolist())
    context = step_context(method, model)
    context.samples = samples
    block = method.plan.roles[:3].tolist()
    result = method_step(method, model, inputs, labels, context)
    keep = torch.tensor(
        [KEEP_ROWS[block[0]], KEEP_ROWS[block[1]], KEEP_ROWS[-1], KEEP_ROWS[block[2]]]
    )  # sample 5: no copies
    with torch.no_grad():
        output = model(inputs)
        features = [output.features[m] * keep[:, i : i + 1] for i, m in enumerate(("m0", "m1"))]
        expected = F.cross_entropy(model.head(features).logits, labels)
    torch.testing.assert_close(result.loss, expected)


def test_a_copy_gives_the_other_encoder_no_gradient():
    splits, model, method = planned_method([[1, 0], [1, 0]])
    for i in (0, 1):  # skip to each sample's m0-only copy in its drawn order
        method.plan.used[i] = method.plan.roles[2 * i : 2 * i + 2].tolist().index(0)
    samples = torch.tensor([0, 1])
    inputs, labels = splits.train.__getitems__(samples.tolist())
    context = step_context(method, model)
    context.samples = samples
    method_step(method, model, inputs, labels, context)
    assert all(p.grad is None or p.grad.eq(0).all() for p in model.encoders["m1"].parameters())
    assert any(p.grad.abs().sum() > 0 for p in model.encoders["m0"].parameters())


def test_modality_level_copies_go_to_the_modality_behind():
    splits, model, method, _ = method_setup("sample_valuation", {"level": "modality", "warmup": 1, "alpha": 1.0})
    logs = method.on_epoch_end(model, 0)
    gaps = 1 - torch.tensor([logs["sv_contribution_m0"], logs["sv_contribution_m1"]])
    behind = int(gaps.argmax())
    expected = int(2 / 3 * float(gaps[behind] - gaps[1 - behind]) * len(splits.train))
    assert expected > 0 and int(method.plan.copies[:, behind].sum()) == expected
    assert int(method.plan.copies[:, 1 - behind].sum()) == 0


def test_a_step_without_sample_indices_is_refused():
    splits, model, method = planned_method([[1, 0]])
    inputs, labels = first_batch(splits)
    with pytest.raises(ConfigError, match="step.samples"):
        method_step(method, model, inputs, labels, step_context(method, model))


def test_a_resampled_epoch_resumes_exactly(tmp_path, at_step, monkeypatch):  # noqa: F811
    # 5 steps in epoch 0; step 9 falls inside epoch 1, which trains the copies planned after epoch 0
    records = train_stop_and_resume(tmp_path, at_step, monkeypatch, "sample_valuation", {"warmup": 1}, stop_at=9)
    assert records[0]["method"]["sv_copies_m0"] > 0
