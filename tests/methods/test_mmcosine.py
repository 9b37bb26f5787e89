"""MMCosine: scaled cosine logits per modality, summed."""

from __future__ import annotations

import pytest
import torch

from erlmr.errors import ConfigError
from erlmr.methods.mmcosine import CosineHead
from support import (
    first_batch,
    method_setup,
)


def test_mmcosine_logits_are_scaled_cosines():
    scale = 7.0
    splits, model, method, _ = method_setup("mmcosine", {"scale": scale}, (2.5, 1.0, 0.8))
    assert isinstance(method.head, CosineHead)
    assert {id(p) for p in method.head.parameters()} <= {id(p) for p in method.parameters()}
    inputs, _ = first_batch(splits)
    output = method.predict(model, inputs)
    for m, weight in zip(splits.modalities, method.head.weights):
        x = output.features[m]
        cosine = (x @ weight.T) / (x.norm(dim=1, keepdim=True) * weight.norm(dim=1))
        torch.testing.assert_close(output.modality_logits[m], scale * cosine)
        assert float(output.modality_logits[m].detach().abs().max()) <= scale + 1e-5
    torch.testing.assert_close(output.logits, sum(output.modality_logits.values()))
    stretched = method.head([3.0 * output.features[m] for m in splits.modalities])
    torch.testing.assert_close(stretched.logits, output.logits)


def test_mmcosine_refuses_heads_that_are_not_linear_and_a_bad_scale():
    with pytest.raises(ConfigError, match="concat or sum"):
        method_setup("mmcosine", fusion="film")
    with pytest.raises(ConfigError, match="scale"):
        method_setup("mmcosine", {"scale": 0.0})
