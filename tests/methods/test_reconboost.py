"""ReconBoost: one learner per stage with reconcilement, then global rectification."""

from __future__ import annotations

import torch

from erlmr.methods.reconboost import (
    RECTIFY,
    boosting_terms,
    consolidation_term,
    schedule_for,
)
from support import (
    first_batch,
    setup_three,
    take_step,
)


def test_reconboost_schedule_alternates_modalities_then_rectifies():
    plan = [schedule_for(e, ["a", "b", "c"], 2, 1) for e in range(10)]
    assert [(s.learner, s.phase) for s in plan[:6]] == [
        ("a", "learn"),
        ("a", "learn"),
        ("a", RECTIFY),
        ("b", "learn"),
        ("b", "learn"),
        ("b", RECTIFY),
    ]
    assert [s.stage for s in plan] == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3]
    assert plan[9].learner == "a" and plan[9].previous == "c" and plan[0].previous is None
    assert all(s.phase == "learn" for s in (schedule_for(e, ["a", "b"], 3, 0) for e in range(6)))


def test_reconboost_reconcilement_downweights_samples_the_others_fit():
    learner = torch.zeros(2, 3, requires_grad=True)
    rest = torch.tensor([[6.0, 0.0, 0.0], [0.0, 6.0, 0.0]])  # others right on sample 0, wrong on sample 1
    labels = torch.tensor([0, 0])
    fit, reconcile = boosting_terms(learner, rest, labels, fit_weight=5.0, reconcile_weight=1.0)
    grad = torch.autograd.grad(fit + reconcile, learner)[0]
    assert grad[0].norm() < 0.85 * grad[1].norm()
    fit_only = torch.autograd.grad(sum(boosting_terms(learner, rest, labels, 5.0, 0.0)), learner)[0]
    torch.testing.assert_close(fit_only[0], fit_only[1])


def test_reconboost_learner_terms_carry_gradient_into_the_current_modality_only():
    splits, model, method = setup_three("reconboost", {"stage_epochs": 1, "rectify_epochs": 1})
    method.on_epoch_start(model, 2)  # stage 1: learner m1, previous learner m0
    assert (method.schedule.learner, method.schedule.previous) == ("m1", "m0")
    inputs, labels = first_batch(splits)
    logits = model(inputs).modality_logits
    _, reconcile = boosting_terms(logits["m1"], method.ensemble({m: logits[m] for m in ("m0", "m2")}), labels, 5.0, 1.0)
    consolidation = consolidation_term(logits["m1"], logits["m0"], 0.5)
    learner, others = list(model.encoders["m1"].parameters()), list(model.encoders["m0"].parameters())
    for term in (reconcile, consolidation):
        grads = torch.autograd.grad(term, learner + others, retain_graph=True, allow_unused=True)
        assert sum(float(g.abs().sum()) for g in grads[: len(learner)]) > 0
        assert all(g is None for g in grads[len(learner) :])
    _, logs = method.learner_loss(logits, labels)
    torch.testing.assert_close(logs["reconboost_consolidation"], consolidation.detach())


def test_reconboost_trains_one_learner_then_rectifies_the_learners_added_so_far():
    splits, model, method = setup_three("reconboost", {"stage_epochs": 1, "rectify_epochs": 1})
    inputs, labels = first_batch(splits)
    method.on_epoch_start(model, 0)
    take_step(method, model, inputs, labels)
    assert all(p.grad is not None for p in model.encoders["m0"].parameters())
    assert all(p.grad is None for m in ("m1", "m2") for p in model.encoders[m].parameters())
    model.zero_grad(set_to_none=True)
    optimizer = torch.optim.SGD([*model.parameters(), method.rate], lr=0.1, momentum=0.9)
    optimizer.state[method.rate]["momentum_buffer"] = torch.ones(())
    method.on_epoch_start(
        model, 1
    )  # rectification of stage 0: fresh optimiser state; m0 (the only learner) and β learn
    take_step(method, model, inputs, labels, optimizer, index=0)
    assert len(optimizer.state) == 0
    optimizer.state[method.rate]["momentum_buffer"] = torch.ones(())
    take_step(method, model, inputs, labels, optimizer, index=1)  # later steps of the epoch keep the state
    assert len(optimizer.state) == 1
    assert all(p.grad is not None for p in model.encoders["m0"].parameters()) and method.rate.grad is not None
    assert all(p.grad is None for m in ("m1", "m2") for p in model.encoders[m].parameters())
    output = method.predict(model, inputs)  # the ensemble of the learners added so far: m0 alone
    torch.testing.assert_close(output.logits, method.rate * output.modality_logits["m0"])
    model.zero_grad(set_to_none=True)
    method.on_epoch_start(model, 3)  # rectification of stage 1: m0 and m1 are in the ensemble, m2 not yet
    take_step(method, model, inputs, labels, optimizer, index=0)
    assert all(p.grad is not None for m in ("m0", "m1") for p in model.encoders[m].parameters())
    assert all(p.grad is None for p in model.encoders["m2"].parameters())
    output = method.predict(model, inputs)
    torch.testing.assert_close(
        output.logits, method.rate * (output.modality_logits["m0"] + output.modality_logits["m1"])
    )


def test_reconboost_first_learner_is_fitted_against_a_constant_ensemble():
    splits, model, method = setup_three("reconboost", {"stage_epochs": 1, "rectify_epochs": 1})
    method.on_epoch_start(model, 0)
    inputs, labels = first_batch(splits)
    logits = model(inputs).modality_logits
    loss, logs = method.learner_loss(logits, labels)
    log_p = logits["m0"].log_softmax(1).gather(1, labels[:, None]).squeeze(1).mean()
    classes = splits.num_classes
    torch.testing.assert_close(loss, -((5.0 - 1.0) / classes) * log_p)  # q = 1: the official placeholder
