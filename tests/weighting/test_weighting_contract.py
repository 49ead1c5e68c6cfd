"""Every loss weighting keeps models independent and padding slots inert; known answers."""

import pytest
import torch

from taskscout.errors import SpecError
from taskscout.weighting import WEIGHTINGS, get_weighting


@pytest.mark.parametrize("name", sorted(WEIGHTINGS))
def test_contract(name):
    w = get_weighting(name)
    K, S = 3, 4
    params = w.init_params(K, S, dtype=torch.float64, device=torch.device("cpu"))
    assert all(p.shape[0] == K for p in params)
    for p in params:
        with torch.no_grad():
            p.add_(torch.linspace(-0.5, 0.5, p.numel(), dtype=torch.float64).view_as(p))
        p.requires_grad_(True)
    losses = torch.rand(K, S, dtype=torch.float64, requires_grad=True)
    weights = torch.tensor([[1.0, 0.5, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0], [0.0, 2.0, 0.0, 1.0]], dtype=torch.float64)
    out = w.combine(losses, weights, params)
    assert out.shape == (K,)
    # model 0's combined loss depends on its own row only
    grads = torch.autograd.grad(out[0], [losses, *params], allow_unused=True, retain_graph=True)
    for g in grads:
        if g is not None:
            assert torch.all(g[1:] == 0)
    # padding slots (weight 0) get no gradient at all
    grads = torch.autograd.grad(out.sum(), [losses, *params], allow_unused=True)
    pad = weights == 0
    for g in grads:
        if g is not None and g.shape == (K, S):
            assert torch.all(g[pad] == 0)
    # the gradients the trainer asks for are autograd's (a closed form must agree)
    d_losses, d_params = w.gradients(losses.detach(), weights, [p.detach() for p in params])
    assert torch.allclose(d_losses, grads[0], atol=1e-12, rtol=0)
    assert len(d_params) == len(params)
    for got, want in zip(d_params, grads[1:], strict=True):
        assert torch.allclose(got, want, atol=1e-12, rtol=0)


def test_equal_is_the_weighted_sum():
    w = get_weighting("equal")
    out = w.combine(torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.tensor([[1.0, 0.5], [0.0, 2.0]]), [])
    assert out.tolist() == [2.0, 8.0]


def test_uncertainty_known_answer_and_gradient():
    w = get_weighting("uncertainty")
    (s,) = w.init_params(1, 2, dtype=torch.float64, device=torch.device("cpu"))
    assert s.tolist() == [[0.0, 0.0]]
    s = torch.tensor([[0.0, 1.0]], dtype=torch.float64, requires_grad=True)
    losses = torch.tensor([[2.0, 3.0]], dtype=torch.float64)
    out = w.combine(losses, torch.ones(1, 2, dtype=torch.float64), [s])
    e = torch.exp(torch.tensor(-1.0, dtype=torch.float64))
    assert torch.allclose(out, torch.stack([2.0 + 3.0 * e + 1.0]))
    out.sum().backward()
    # d/ds (exp(-s) L + s) = 1 - exp(-s) L
    assert torch.allclose(s.grad, torch.stack([torch.tensor(1.0 - 2.0, dtype=torch.float64), 1.0 - 3.0 * e])[None])


def test_unknown_weighting_suggests_a_name():
    with pytest.raises(SpecError, match="did you mean 'uncertainty'"):
        get_weighting("uncertanty")
