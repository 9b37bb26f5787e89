import pytest
import torch

from erlmr import ConcatFusion, ConfigError, FiLMFusion, GatedFusion, SumFusion


@pytest.mark.parametrize("widths", [[4, 6], [3, 5, 2]])
def test_concat_modality_logits_sum_exactly_to_fused_logits(widths):
    head = ConcatFusion(widths, num_classes=3)
    features = [torch.randn(7, d) for d in widths]
    out = head(features)
    torch.testing.assert_close(torch.stack(out.modality_logits).sum(0), out.logits)
    torch.testing.assert_close(out.logits, head.linear(torch.cat(features, dim=1)))
    # Modality m's logits depend on its own features only.
    features[0] = features[0] + 1
    changed = head(features)
    torch.testing.assert_close(changed.modality_logits[1], out.modality_logits[1])
    assert not torch.allclose(changed.modality_logits[0], out.modality_logits[0])


def test_sum_fusion_adds_each_modalitys_own_layer():
    head = SumFusion([4, 5, 6], num_classes=2)
    features = [torch.randn(3, d) for d in (4, 5, 6)]
    out = head(features)
    for layer, x, logits in zip(head.linears, features, out.modality_logits):
        torch.testing.assert_close(logits, layer(x))
    torch.testing.assert_close(out.logits, sum(out.modality_logits))


def test_film_uses_each_modalitys_own_conditioning_layer():
    head = FiLMFusion([4, 6], num_classes=3)
    x0, x1 = torch.randn(5, 4), torch.randn(5, 6)
    head([x0, x1]).logits.sum().backward()
    first, second = head.films
    assert first.weight.grad.abs().sum() > 0, "modality 0's FiLM layer gets no gradient"
    assert second.weight.grad.abs().sum() > 0, "modality 1's FiLM layer gets no gradient"
    gamma0, beta0 = first(x0).chunk(2, dim=1)
    gamma1, beta1 = second(x1).chunk(2, dim=1)
    expected = head.out(torch.cat([gamma1 * x0 + beta1, gamma0 * x1 + beta0], dim=1))
    torch.testing.assert_close(head([x0, x1]).logits, expected)


def test_film_modality_logits_carry_no_information_from_the_other_modality():
    head = FiLMFusion([4, 4], num_classes=3)
    x0 = torch.randn(5, 4)
    a = head([x0, torch.randn(5, 4)]).modality_logits[0]
    b = head([x0, torch.randn(5, 4)]).modality_logits[0]
    torch.testing.assert_close(a, b)


def test_gated_fusion_gates_one_modality_with_the_other():
    head = GatedFusion([4, 4], num_classes=3, gate_on=0)
    x0, x1 = torch.randn(5, 4), torch.randn(5, 4)
    h0, h1 = head.projections[0](x0), head.projections[1](x1)
    torch.testing.assert_close(head([x0, x1]).logits, head.out(torch.sigmoid(h0) * h1))


@pytest.mark.parametrize("cls", [FiLMFusion, GatedFusion])
def test_two_modality_heads_reject_three_with_a_clear_error(cls):
    with pytest.raises(ConfigError, match="exactly 2 modalities.*'concat' or 'sum'"):
        cls([4, 4, 4], num_classes=2)
