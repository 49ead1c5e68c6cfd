"""The multi-task MLP: typed heads, seeded initialisation, gradient reversal, stacked layout."""

import math

import numpy as np
import pytest
import torch

from taskscout.data import Head
from taskscout.errors import SpecError
from taskscout.models import (
    MultiTaskMLP,
    StackedMLP,
    grad_reverse,
    group_sizes,
    grouped_bmm,
    layer_seed,
    slot_layout,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


HEADS = [
    Head("b", "binary"),
    Head("m", "multiclass", 3),
    Head("o", "ordinal", 4),
    Head("r", "regression", scale=2.0),
    Head("s", "soft", 5),
    Head("adv", "binary", adversarial=True),
]


def net(targets, *, branch=1, seed=0, depth=2, width=8, d=5, dropped=(), dtype=torch.float64, heads=HEADS, lam=1.0):
    return MultiTaskMLP(in_features=d, heads=heads, targets=targets, depth=depth, width=width, branch_layer=branch,
                        seed=seed, dropped_features=dropped, adversarial_lambda=lam, dtype=dtype)


def test_head_widths_and_outputs():
    assert [h.width for h in HEADS] == [1, 1, 1, 1, 5, 1]
    assert [h.outputs for h in HEADS] == [1, 3, 3, 1, 5, 1]


def test_head_rejects_unknown_type_and_missing_classes():
    with pytest.raises(SpecError, match="type 'count'"):
        Head("x", "count")
    with pytest.raises(SpecError, match="n_classes >= 2"):
        Head("x", "multiclass")


def test_output_shapes_follow_head_types():
    outs = net((0, 1, 2, 3, 4))(torch.zeros(7, 5, dtype=torch.float64))
    assert [tuple(o.shape) for o in outs] == [(7, 1), (7, 3), (7, 3), (7, 1), (7, 5)]


def test_bad_architecture_is_a_spec_error():
    with pytest.raises(SpecError, match="branch_layer must be in 0..2"):
        net((0,), branch=3)
    with pytest.raises(SpecError, match="out of range"):
        net((9,))
    with pytest.raises(SpecError, match="dropped feature 7"):
        net((0,), dropped=(7,))


def test_initial_weights_depend_on_seed_layer_and_target_only():
    alone, pair = net((2,), seed=3), net((0, 2), seed=3)
    # shared layer and target 2's tower and head start identical with or without a partner
    assert torch.equal(alone.trunk[0].weight, pair.trunk[0].weight)
    assert torch.equal(alone.towers[0][0].weight, pair.towers[1][0].weight)
    assert torch.equal(alone.heads[0].bias, pair.heads[1].bias)
    other = net((2,), seed=4)
    assert not torch.equal(alone.trunk[0].weight, other.trunk[0].weight)
    # default Linear bound 1/sqrt(fan_in), and float32 starts from the same numbers
    assert alone.trunk[0].weight.abs().max() <= 1 / math.sqrt(5)
    assert torch.allclose(net((2,), seed=3, dtype=torch.float32).trunk[0].weight.double(), alone.trunk[0].weight, atol=1e-7)
    assert layer_seed(3, 1, -1) != layer_seed(3, 1, 0)


def test_dropped_features_have_no_effect():
    m = net((0, 3), dropped=(1, 4))
    x = torch.randn(6, 5, dtype=torch.float64)
    y = x.clone()
    y[:, [1, 4]] = 100.0
    for a, b in zip(m(x), m(y), strict=True):
        assert torch.equal(a, b)


def test_grad_reverse_is_identity_forward_and_negated_backward():
    x = torch.tensor([1.0, -2.0], requires_grad=True)
    y = grad_reverse(x, 0.5)
    assert torch.equal(y, x)
    (y * torch.tensor([3.0, 4.0])).sum().backward()
    assert torch.equal(x.grad, torch.tensor([-1.5, -2.0]))


def test_adversarial_head_reverses_the_shared_gradient_by_hand():
    # depth 1, width 2, branch 1: z = v . relu(W x + c) + e, loss = BCE(z, y). By hand:
    # dL/dz = sigmoid(z) - y; head gradient dv = dL/dz * h (not reversed);
    # shared gradient dW = -lambda * (dL/dz * v * 1[pre > 0]) x^T (reversed).
    lam = 0.7
    m = net((5,), branch=1, depth=1, width=2, d=3, lam=lam)
    x = np.array([0.5, -1.0, 2.0])
    y = 1.0
    W, c = np.array([[0.2, -0.1, 0.3], [-0.4, 0.5, -0.2]]), np.array([0.1, 0.05])
    v, e = np.array([0.6, -0.3]), -0.2
    with torch.no_grad():
        m.trunk[0].weight.copy_(torch.tensor(W))
        m.trunk[0].bias.copy_(torch.tensor(c))
        m.heads[0].weight.copy_(torch.tensor(v[None]))
        m.heads[0].bias.fill_(e)
    pre = W @ x + c
    h = np.maximum(pre, 0)
    z = v @ h + e
    dz = 1 / (1 + np.exp(-z)) - y
    expected_dv = dz * h
    expected_dW = -lam * np.outer(dz * v * (pre > 0), x)
    out = m(torch.tensor(x[None]))[0]
    torch.nn.functional.binary_cross_entropy_with_logits(out[:, 0], torch.tensor([y], dtype=torch.float64)).backward()
    assert np.allclose(m.heads[0].weight.grad.numpy()[0], expected_dv, atol=1e-12)
    assert np.allclose(m.trunk[0].weight.grad.numpy(), expected_dW, atol=1e-12)
    assert (pre > 0).tolist() == [True, False] and abs(expected_dW).sum() > 0  # one live unit, one dead


def test_slot_layout_orders_slots_by_loss_family():
    lay = slot_layout(HEADS, [(3, 0, 1), (4,), (2, 5)])
    # families: cumulative (binary, ordinal) 2 slots, softmax 1, squared 1
    assert lay.family_slices == ((0, 2), (2, 3), (3, 4))
    assert lay.slot_head.tolist() == [[0, -1, 1, 3], [-1, -1, 4, -1], [2, 5, -1, -1]]
    assert lay.slot_of == ((3, 0, 2), (2,), (0, 1))
    assert lay.out_width == 5


@pytest.mark.parametrize("branch", [0, 1, 2])
def test_stack_matches_single_models_and_round_trips_state(branch):
    targets = [(0, 1, 2, 3, 4, 5), (3,), (4, 0), (2, 5)]
    dropped = [(), (0,), (1, 2), ()]
    nets = [net(t, branch=branch, seed=k, dropped=dropped[k]) for k, t in enumerate(targets)]
    lay = slot_layout(HEADS, targets)
    stack = StackedMLP(heads=HEADS, layout=lay, in_features=5, depth=2, width=8, branch_layer=branch, dropped=dropped,
                       adversarial_lambda=1.0, dtype=torch.float64, device=torch.device("cpu"))
    for k, m in enumerate(nets):
        stack.load_model(k, m.state_dict())
    x = torch.randn(len(targets), 9, 5, dtype=torch.float64)
    out = stack.forward(x)
    assert out.shape == (len(targets), lay.n_slots, lay.out_width, 9)
    for k, m in enumerate(nets):
        for j, (t, s) in enumerate(zip(targets[k], lay.slot_of[k], strict=True)):
            o = HEADS[t].outputs
            assert torch.allclose(out[k, s, :o].T, m(x[k])[j], atol=1e-12)
        state = stack.model_state(k, input_mask=m.input_mask)
        assert state.keys() == m.state_dict().keys()
        assert all(torch.equal(state[n], v) for n, v in m.state_dict().items())


@pytest.mark.parametrize(("branch", "depth"), [(0, 2), (1, 2), (1, 3), (2, 2), (3, 3)])
def test_stacked_gradients_equal_the_single_models(branch, depth):
    # Every parameter's gradient from the stack's hand-written backward, against autograd on
    # single models: with an adversarial target (gradient reversal at the branch, lambda 0.5),
    # dropped inputs, trunks of 0 to 3 shared layers, towers of 0 to 2 layers, and at
    # branch = depth the transposed output layer.
    targets = [(0, 5), (5,), (3, 1), (4,)]
    dropped = [(), (1,), (), (0, 3)]
    nets = [net(t, branch=branch, depth=depth, seed=k, lam=0.5, dropped=dropped[k]) for k, t in enumerate(targets)]
    lay = slot_layout(HEADS, targets)
    stack = StackedMLP(heads=HEADS, layout=lay, in_features=5, depth=depth, width=8, branch_layer=branch,
                       dropped=dropped, adversarial_lambda=0.5, dtype=torch.float64, device=torch.device("cpu"))
    for k, m in enumerate(nets):
        stack.load_model(k, m.state_dict())
    for t in stack.params.values():
        t.requires_grad_(True)  # as the optimiser's parameters are: still no graph is recorded
    x = torch.randn(4, 7, 5, dtype=torch.float64)
    out, tape = stack.forward_with_tape(x)
    assert not out.requires_grad and torch.equal(out, stack.forward(x))
    weights = torch.randn(out.shape, dtype=torch.float64)  # a loss that weighs every output: its gradient
    grads = stack.backward(tape, weights.permute(1, 2, 0, 3).contiguous().permute(2, 0, 1, 3))  # stored as the losses store it
    assert all(grads[name].shape == t.shape for name, t in stack.params.items())
    for k, m in enumerate(nets):
        outs = m(x[k])
        sum((o * weights[k, s, :o.shape[1]].T).sum() for o, s in zip(outs, lay.slot_of[k], strict=True)).backward()
        got = stack.model_state(k, grads)
        for name, p in m.named_parameters():
            assert torch.allclose(got[name], p.grad, atol=1e-12), (k, name)


def test_grouped_bmm_gives_each_model_its_groups_product():
    g = torch.Generator().manual_seed(0)
    b = torch.randn(6, 4, 3, generator=g, dtype=torch.float64)
    bias = torch.randn(6, 1, 3, generator=g, dtype=torch.float64)
    for sizes in [(6,), (2, 3, 1), (1,) * 6]:
        a = torch.randn(len(sizes), 5, 4, generator=g, dtype=torch.float64)
        group = [j for j, n in enumerate(sizes) for _ in range(n)]
        expected = torch.stack([a[group[k]] @ b[k] for k in range(6)])
        assert torch.equal(grouped_bmm(a, b, sizes), expected)
        assert torch.allclose(grouped_bmm(a, b, sizes, bias), expected + bias, atol=1e-12, rtol=0)
    assert group_sizes([3, 3, 5, 3, 3, 3]) == (2, 1, 3)
    assert group_sizes([]) == ()
