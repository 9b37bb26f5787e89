"""unimodal: only the chosen modality's encoder runs, in training and prediction."""

from __future__ import annotations

import pytest
import torch

from erlmr.errors import ConfigError
from support import (
    first_batch,
    method_setup,
    step,
)


@pytest.mark.parametrize("options", [{}, {"modality": "m7"}])
def test_unimodal_needs_a_known_modality(options):
    with pytest.raises(ConfigError, match=r"modality.*\['m0', 'm1'\]"):
        method_setup("unimodal", options)


def test_unimodal_never_runs_the_other_encoders():
    splits, model, method, _ = method_setup("unimodal", {"modality": "m1"})

    def refuse(module, args):
        raise AssertionError("the m0 encoder ran")

    model.encoders["m0"].register_forward_pre_hook(refuse)
    inputs, labels = first_batch(splits)
    result = step(method, model, inputs, labels)
    assert all(p.grad is None for p in model.encoders["m0"].parameters())
    assert all(p.grad is not None for p in model.encoders["m1"].parameters())
    scrambled = {**inputs, "m0": torch.randn_like(inputs["m0"])}
    with torch.no_grad():
        torch.testing.assert_close(method.predict(model, scrambled).logits, result.output.logits.detach())
