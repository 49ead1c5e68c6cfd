"""The multi-task MLP, as one `nn.Module` and as a stack of K models on a leading model axis.

A model has a trunk of `depth` layers of `width` units (ReLU) and one head per target. Its
`branch_layer` b (0..depth) says how much of the trunk is shared: layers 1..b are shared by all of
the model's targets, layers b+1..depth are copied per target (a "tower"), then the target's output
layer. Output widths by head type: binary and regression 1, multiclass and soft C, ordinal C-1
cumulative logits (logit k models P(y > k)). An adversarial target sees the shared representation
through a gradient-reversal layer: identity forward, gradient times -lambda backward, so its own
tower and head minimise its loss while the shared layers are pushed to forget it.

Initial weights are a function of (seed, layer, target) only: every linear layer draws from its
own generator, so a target's tower starts the same whether it is trained alone or with partners,
and the shared layers start the same for every task subset trained with the same seed.

`StackedMLP` holds the parameters of K such models (same depth, width and branch layer; any
targets, seeds and dropped inputs) as stacked tensors and applies them with batched matrix
products. Each model's targets occupy "slots"; slots are ordered by loss family so that each
family's loss is computed on one contiguous slice. The stack is built from, and converts back
to, single `MultiTaskMLP` state dicts, which keeps the two forms interchangeable.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from taskscout.data.heads import FAMILIES, Head
from taskscout.errors import SpecError


def layer_seed(seed: int, layer: int, head: int) -> int:
    """Seed of one linear layer: layer 1..depth+1 (depth+1 = output layer), head -1 = shared."""
    return (int(seed) * 1_000_003 + layer * 10_007 + (head + 1) * 101) % (2**62)


class Linear(nn.Module):
    """`nn.Linear` without its random initialisation (the model initialises from its own seeds)."""

    def __init__(self, in_features: int, out_features: int, *, dtype: torch.dtype) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features, dtype=dtype))
        self.bias = nn.Parameter(torch.empty(out_features, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x, self.weight, self.bias)


def _init_linear(linear: Linear, seed: int) -> None:
    # PyTorch's default Linear init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)), drawn in float64 from the
    # layer's own generator so float32 and float64 models start from the same numbers.
    gen = torch.Generator().manual_seed(seed)
    bound = 1.0 / math.sqrt(linear.in_features)
    with torch.no_grad():
        w = (torch.rand(linear.weight.shape, generator=gen, dtype=torch.float64) * 2 - 1) * bound
        b = (torch.rand(linear.bias.shape, generator=gen, dtype=torch.float64) * 2 - 1) * bound
        linear.weight.copy_(w)
        linear.bias.copy_(b)


class _GradReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, lam: float) -> torch.Tensor:  # type: ignore[override]
        ctx.lam = lam
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        return -ctx.lam * grad, None


def grad_reverse(x: torch.Tensor, lam: float = 1.0) -> torch.Tensor:
    """Identity forward; the gradient flowing back is multiplied by -lam."""
    return _GradReverse.apply(x, lam)


class MultiTaskMLP(nn.Module):
    """One multi-task MLP: shared layers 1..b, per-target towers b+1..depth, typed output layers.

    `forward(x)` returns one tensor per target of the model (in `targets` order), of shape
    (n, heads[t].outputs): raw logits for classification heads, standardised values for regression.
    """

    def __init__(
        self,
        *,
        in_features: int,
        heads: Sequence[Head],
        targets: Sequence[int],
        depth: int,
        width: int,
        branch_layer: int,
        seed: int = 0,
        dropped_features: Sequence[int] = (),
        adversarial_lambda: float = 1.0,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        check_architecture(in_features=in_features, heads=heads, targets=targets, depth=depth,
                           branch_layer=branch_layer, dropped_features=dropped_features)
        self.heads_all = tuple(heads)
        self.targets = tuple(int(t) for t in targets)
        self.depth, self.width, self.branch_layer = depth, width, branch_layer
        self.adversarial_lambda = float(adversarial_lambda)
        sizes = [in_features] + [width] * depth

        def linear(i: int, o: int) -> Linear:
            return Linear(i, o, dtype=dtype)

        self.trunk = nn.ModuleList(linear(sizes[i], sizes[i + 1]) for i in range(branch_layer))
        self.towers = nn.ModuleList(
            nn.ModuleList(linear(sizes[i], sizes[i + 1]) for i in range(branch_layer, depth)) for _ in self.targets
        )
        self.heads = nn.ModuleList(linear(sizes[-1], heads[t].outputs) for t in self.targets)
        mask = torch.ones(in_features, dtype=dtype)
        mask[list(dropped_features)] = 0
        self.register_buffer("input_mask", mask)
        self.reset_parameters(seed)

    def reset_parameters(self, seed: int) -> None:
        """Initialise every layer from (seed, layer, target)."""
        for i, lin in enumerate(self.trunk):
            _init_linear(lin, layer_seed(seed, i + 1, -1))
        for j, t in enumerate(self.targets):
            for i, lin in enumerate(self.towers[j]):
                _init_linear(lin, layer_seed(seed, self.branch_layer + i + 1, t))
            _init_linear(self.heads[j], layer_seed(seed, self.depth + 1, t))

    def shared(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Representations after each shared layer 1..b (empty when b = 0)."""
        h = x * self.input_mask
        out = []
        for lin in self.trunk:
            h = torch.relu(lin(h))
            out.append(h)
        return out

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        shared = self.shared(x)
        h = shared[-1] if shared else x * self.input_mask
        outs = []
        for j, t in enumerate(self.targets):
            z = grad_reverse(h, self.adversarial_lambda) if self.heads_all[t].adversarial else h
            for lin in self.towers[j]:
                z = torch.relu(lin(z))
            outs.append(self.heads[j](z))
        return outs


def check_architecture(*, in_features: int, heads: Sequence[Head], targets: Sequence[int], depth: int,
                       branch_layer: int, dropped_features: Sequence[int] = ()) -> None:
    """Raise SpecError when a model's description is inconsistent."""
    if not targets:
        raise SpecError("a model needs at least one target; give ModelPlan.targets as head indices")
    if len(set(targets)) != len(targets):
        raise SpecError(f"a model lists a target more than once: {tuple(targets)}")
    bad = [t for t in targets if not 0 <= t < len(heads)]
    if bad:
        raise SpecError(f"target index {bad[0]} is out of range: there are {len(heads)} heads (0..{len(heads) - 1})")
    if not 0 <= branch_layer <= depth:
        raise SpecError(f"branch_layer must be in 0..{depth} (the trunk depth). Got {branch_layer} instead.")
    bad = [f for f in dropped_features if not 0 <= f < in_features]
    if bad:
        raise SpecError(f"dropped feature {bad[0]} is out of range: the inputs have {in_features} features")


# ---------------------------------------------------------------- stacked layout


@dataclass(frozen=True)
class SlotLayout:
    """Where each model's targets sit in a stack: slots ordered by loss family."""

    slot_head: np.ndarray  # (K, S) head index per slot, -1 = padding
    slot_of: tuple[tuple[int, ...], ...]  # per model: slot of each of its targets (plan order)
    family_slices: tuple[tuple[int, int], ...]  # per family: [start, stop) of its slots
    out_width: int  # W: widest output layer in the stack

    @property
    def n_models(self) -> int:
        return self.slot_head.shape[0]

    @property
    def n_slots(self) -> int:
        return self.slot_head.shape[1]


def slot_layout(heads: Sequence[Head], targets: Sequence[Sequence[int]]) -> SlotLayout:
    """Assign every model's targets to slots; families get max-over-models many slots each."""
    per_family = [[[t for t in ts if heads[t].family == f] for f in range(len(FAMILIES))] for ts in targets]
    counts = [max(len(m[f]) for m in per_family) for f in range(len(FAMILIES))]
    starts = np.concatenate([[0], np.cumsum(counts)]).astype(int)
    S = int(starts[-1])
    slot_head = np.full((len(targets), S), -1, dtype=np.int64)
    slot_of = []
    for k, ts in enumerate(targets):
        used = [0] * len(FAMILIES)
        slots = []
        for t in ts:
            f = heads[t].family
            s = int(starts[f]) + used[f]
            used[f] += 1
            slot_head[k, s] = t
            slots.append(s)
        slot_of.append(tuple(slots))
    W = max(heads[t].outputs for ts in targets for t in ts)
    return SlotLayout(slot_head, tuple(slot_of), tuple((int(starts[f]), int(starts[f + 1])) for f in range(len(FAMILIES))), W)


def _shared_forward(x: torch.Tensor, sizes: tuple[int, ...], ws: Sequence[torch.Tensor], bs: Sequence[torch.Tensor],
                    transposed: bool, keep: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The shared trunk layers 1..b (linear + ReLU) and the linear layer after them (tower 1 or
    the output layer): its pre-activation and, with `keep`, the activations the backward pass
    needs (else none: an evaluation pass frees each as it goes).

    x (G, B, in) holds one input matrix per group of consecutive models (`sizes`, see
    `grouped_bmm`); weights ws[i] (K, in_i, out_i), biases bs[i] (K, 1, out_i), the last of each
    for the layer after the trunk. Output (K, B, N), or with `transposed` (K, N, B): for a narrow
    output layer (N = a few outputs) the transposed products run 1.5-2x as fast. With b = 0 it
    is that one layer. Each product starts from its bias (`_bmm`), and ReLUs apply in place: on
    CPU these layers are memory-bound outside their products."""
    if len(ws) == 1:  # b = 0: the layer after the (empty) trunk reads the inputs
        if transposed:
            raise SpecError("a transposed output layer needs a trunk (depth >= 1)")
        return grouped_bmm(x, ws[0], sizes, bs[0]), [x] if keep else []
    acts = [x]
    h = grouped_bmm(x, ws[0], sizes, bs[0]).relu_()
    for w, b in zip(ws[1:-1], bs[1:-1], strict=True):
        if keep:
            acts.append(h)
        h = _bmm(h, w, b).relu_()
    if keep:
        acts.append(h)
    else:
        acts = []
    if transposed:
        return _bmm(ws[-1].transpose(1, 2), h.transpose(1, 2), bs[-1].transpose(1, 2)), acts
    return _bmm(h, ws[-1], bs[-1]), acts


def _shared_backward(acts: list[torch.Tensor], ws: Sequence[torch.Tensor], sizes: tuple[int, ...], g: torch.Tensor,
                     col_scale: torch.Tensor | None, transposed: bool) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Weight and bias gradients of `_shared_forward`'s layers for the gradient g of its output
    (same shape). Each ReLU gradient is masked in place right after the product that wrote it.
    The input gradient of the layer after the trunk is scaled per output column by `col_scale`
    (K, 1, N) when given: -lambda for the columns of an adversarial target (its gradient-reversal
    layer), 1 for the others. The inputs get no gradient."""
    n = len(ws)
    if n == 1:  # b = 0: only the layer's own gradients
        return [grouped_bmm(acts[0].transpose(1, 2), g, sizes)], [g.sum(1, keepdim=True)]
    if transposed:  # g is (K, N, B)
        dws = [torch.bmm(g, acts[-1]).transpose(1, 2)]
        dbs = [g.sum(2).unsqueeze(1)]
        gs = g if col_scale is None else g * col_scale.transpose(1, 2)
        d = torch.bmm(gs.transpose(1, 2), ws[-1].transpose(1, 2))
    else:
        dws = [torch.bmm(acts[-1].transpose(1, 2), g)]
        dbs = [g.sum(1, keepdim=True)]
        d = torch.bmm(g if col_scale is None else g * col_scale, ws[-1].transpose(1, 2))
    for i in range(n - 1, 0, -1):  # layer i: input acts[i - 1], output acts[i], weight ws[i - 1]
        # d is this function's own tensor, fresh from the product: mask it in place.
        torch.ops.aten.threshold_backward.grad_input(d, acts[i], 0, grad_input=d)
        dws.append(grouped_bmm(acts[0].transpose(1, 2), d, sizes) if i == 1
                   else torch.bmm(acts[i - 1].transpose(1, 2), d))
        dbs.append(d.sum(1, keepdim=True))
        if i > 1:
            d = torch.bmm(d, ws[i - 1].transpose(1, 2))
    return dws[::-1], dbs[::-1]


@dataclass
class Tape:
    """What `StackedMLP.backward` needs of one `forward_with_tape` pass."""

    sizes: tuple[int, ...]
    acts: list[torch.Tensor]  # the shared chain's inputs and trunk activations
    chain_ws: list[torch.Tensor]  # the shared chain's weights as applied (dropped inputs masked)
    towers: list[torch.Tensor]  # b < depth: tower activations, (K*S, B, H) each; else empty
    branch_out: torch.Tensor | None  # b < depth: tower layer 1's activation, (K, B, S*H)


def grouped_bmm(a: torch.Tensor, b: torch.Tensor, sizes: tuple[int, ...], bias: torch.Tensor | None = None) -> torch.Tensor:
    """Per model k, a[j] @ b[k] (+ bias[k]), where j is the group of model k: `a` (G, m, n) holds
    one matrix per group of consecutive models, `sizes` (G entries, summing to K) says how many
    models each group has, b is (K, n, p) and bias, if given, (K, 1, p). Result (K, m, p).

    Models trained with the same seed see the same batches, so their first layer reads one input
    matrix: each group's products run on it as a stride-0 batch, which leaves the inputs in cache
    and skips gathering them once per model."""
    K = b.shape[0]
    if len(sizes) == K:  # every model has its own inputs
        return _bmm(a, b, bias)
    if len(sizes) == 1:
        return _bmm(a[0].expand(K, -1, -1), b, bias)
    out = b.new_empty(K, a.shape[1], b.shape[2])
    biases = bias.split(sizes) if bias is not None else (None,) * len(sizes)
    for x, w, c, o, n in zip(a.unbind(0), b.split(sizes), biases, out.split(sizes), sizes, strict=True):
        _bmm(x.expand(n, -1, -1), w, c, out=o)
    return out


def _bmm(a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None, out: torch.Tensor | None = None) -> torch.Tensor:
    """a @ b, plus bias (broadcast over rows) when given. The product starts from the bias
    (`baddbmm`), as `nn.Linear` does: on CPU that is 7-10% faster than adding the bias after
    the product, because each model's output matrix is still in cache when the bias goes in
    (32 models' 256x64 @ 64x64 layer with its ReLU: 780-860 us against 840-970 us)."""
    if bias is None:
        return torch.bmm(a, b, out=out) if out is not None else torch.bmm(a, b)
    bias = bias.expand(a.shape[0], a.shape[1], b.shape[2])
    return torch.baddbmm(bias, a, b, out=out) if out is not None else torch.baddbmm(bias, a, b)


def group_sizes(seeds: Sequence[int]) -> tuple[int, ...]:
    """Lengths of the runs of equal consecutive seeds: the groups of `grouped_bmm`."""
    sizes: list[int] = []
    for i, s in enumerate(seeds):
        if i and s == seeds[i - 1]:
            sizes[-1] += 1
        else:
            sizes.append(1)
    return tuple(sizes)


class StackedMLP:
    """K multi-task MLPs with one depth, width and branch layer, as stacked leaf tensors.

    `params` maps a name to a tensor whose first axis is the model: trunk.i.w (K, in, H),
    trunk.i.b (K, 1, H); when b < depth, tower.0.w (K, in, S, H), tower.0.b (K, 1, S, H),
    tower.i.w (K, S, H, H), tower.i.b (K, S, 1, H), head.w (K, S, H, W), head.b (K, S, 1, W);
    when b = depth, head.w (K, H, S, W), head.b (K, 1, S, W). Padding slots and padding output
    columns hold zeros and receive zero gradient.
    """

    def __init__(self, *, heads: Sequence[Head], layout: SlotLayout, in_features: int, depth: int, width: int,
                 branch_layer: int, dropped: Sequence[Sequence[int]], adversarial_lambda: float,
                 dtype: torch.dtype, device: torch.device) -> None:
        self.heads, self.layout = tuple(heads), layout
        self.in_features, self.depth, self.width, self.branch_layer = in_features, depth, width, branch_layer
        self.dtype, self.device = dtype, device
        K, S, W, H = layout.n_models, layout.n_slots, layout.out_width, width
        self.params: dict[str, torch.Tensor] = {}
        sizes = [in_features] + [H] * depth
        kw = {"dtype": dtype, "device": device}
        for i in range(branch_layer):
            self.params[f"trunk.{i}.w"] = torch.zeros(K, sizes[i], H, **kw)
            self.params[f"trunk.{i}.b"] = torch.zeros(K, 1, H, **kw)
        if branch_layer < depth:
            self.params["tower.0.w"] = torch.zeros(K, sizes[branch_layer], S, H, **kw)
            self.params["tower.0.b"] = torch.zeros(K, 1, S, H, **kw)
            for i in range(1, depth - branch_layer):
                self.params[f"tower.{i}.w"] = torch.zeros(K, S, H, H, **kw)
                self.params[f"tower.{i}.b"] = torch.zeros(K, S, 1, H, **kw)
            self.params["head.w"] = torch.zeros(K, S, H, W, **kw)
            self.params["head.b"] = torch.zeros(K, S, 1, W, **kw)
        else:
            self.params["head.w"] = torch.zeros(K, H, S, W, **kw)
            self.params["head.b"] = torch.zeros(K, 1, S, W, **kw)
        # Dropped inputs: the first layer's weights are multiplied by a 0/1 row mask, which gives
        # the same products and gradients as zeroing the inputs.
        fmask = torch.ones(K, in_features, **kw)
        for k, d in enumerate(dropped):
            fmask[k, list(d)] = 0
        self.feature_mask = fmask if bool((fmask == 0).any()) else None
        # Gradient reversal per slot, applied where the towers branch off a shared trunk.
        adv = np.array([[h >= 0 and heads[h].adversarial for h in row] for row in layout.slot_head], dtype=bool)
        self.col_scale = None
        if branch_layer > 0 and adv.any():
            per_slot = torch.tensor(np.where(adv, -adversarial_lambda, 1.0), **kw)  # (K, S)
            cols = W if branch_layer == depth else H
            self.col_scale = per_slot[:, None, :, None].expand(K, 1, S, cols).reshape(K, 1, S * cols)

    # ------------------------------------------------------------ conversion

    def load_model(self, k: int, state: dict[str, torch.Tensor]) -> None:
        """Copy one `MultiTaskMLP` state dict into model slot k."""
        b, L = self.branch_layer, self.depth
        p = self.params
        with torch.no_grad():
            for i in range(b):
                p[f"trunk.{i}.w"][k].copy_(state[f"trunk.{i}.weight"].T)
                p[f"trunk.{i}.b"][k, 0].copy_(state[f"trunk.{i}.bias"])
            for j, s in enumerate(self.layout.slot_of[k]):
                for i in range(L - b):
                    w, bias = state[f"towers.{j}.{i}.weight"].T, state[f"towers.{j}.{i}.bias"]
                    if i == 0:
                        p["tower.0.w"][k, :, s].copy_(w)
                        p["tower.0.b"][k, 0, s].copy_(bias)
                    else:
                        p[f"tower.{i}.w"][k, s].copy_(w)
                        p[f"tower.{i}.b"][k, s, 0].copy_(bias)
                w, bias = state[f"heads.{j}.weight"].T, state[f"heads.{j}.bias"]
                o = w.shape[1]
                if b < L:
                    p["head.w"][k, s, :, :o].copy_(w)
                    p["head.b"][k, s, 0, :o].copy_(bias)
                else:
                    p["head.w"][k, :, s, :o].copy_(w)
                    p["head.b"][k, 0, s, :o].copy_(bias)

    def model_state(self, k: int, params: dict[str, torch.Tensor] | None = None,
                    input_mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Model k as a `MultiTaskMLP` state dict of CPU tensors (from `params`, default the live ones)."""
        p = self.params if params is None else params
        b, L = self.branch_layer, self.depth
        out: dict[str, torch.Tensor] = {}

        def put(name: str, t: torch.Tensor) -> None:
            out[name] = t.detach().to("cpu").clone().contiguous()

        for i in range(b):
            put(f"trunk.{i}.weight", p[f"trunk.{i}.w"][k].T)
            put(f"trunk.{i}.bias", p[f"trunk.{i}.b"][k, 0])
        for j, s in enumerate(self.layout.slot_of[k]):
            head = self.heads[int(self.layout.slot_head[k, s])]
            for i in range(L - b):
                if i == 0:
                    put(f"towers.{j}.{i}.weight", p["tower.0.w"][k, :, s].T)
                    put(f"towers.{j}.{i}.bias", p["tower.0.b"][k, 0, s])
                else:
                    put(f"towers.{j}.{i}.weight", p[f"tower.{i}.w"][k, s].T)
                    put(f"towers.{j}.{i}.bias", p[f"tower.{i}.b"][k, s, 0])
            o = head.outputs
            if b < L:
                put(f"heads.{j}.weight", p["head.w"][k, s, :, :o].T)
                put(f"heads.{j}.bias", p["head.b"][k, s, 0, :o])
            else:
                put(f"heads.{j}.weight", p["head.w"][k, :, s, :o].T)
                put(f"heads.{j}.bias", p["head.b"][k, 0, s, :o])
        if input_mask is not None:
            put("input_mask", input_mask)
        return out

    # ------------------------------------------------------------ forward

    def forward(self, x: torch.Tensor, params: dict[str, torch.Tensor] | None = None,
                sizes: tuple[int, ...] | None = None) -> torch.Tensor:
        """Outputs (K, S, W, B) for inputs x of shape (K, B, in), one matrix per model; (G, B, in)
        with `sizes`, one matrix per group of consecutive models (see `grouped_bmm`); or (B, in),
        shared by all models.

        The result is a view of a tensor stored slot-major, (S, W, K, B) contiguous: the losses
        run over it in that layout, rows innermost, with no further copy either way. No autograd
        graph is recorded for the stack's own parameters: training calls `forward_with_tape` and
        `backward`."""
        return self._run(x, self.params if params is None else params, sizes)[0]

    def forward_with_tape(self, x: torch.Tensor, sizes: tuple[int, ...] | None = None) -> tuple[torch.Tensor, Tape]:
        """`forward` with this stack's parameters, and the tape `backward` needs."""
        out, tape = self._run(x, self.params, sizes, keep=True)
        assert tape is not None
        return out, tape

    def _run(self, x: torch.Tensor, p: dict[str, torch.Tensor], sizes: tuple[int, ...] | None,
             keep: bool = False) -> tuple[torch.Tensor, Tape | None]:
        S, W, H = self.layout.n_slots, self.layout.out_width, self.width
        K = p["head.w"].shape[0]
        b, L = self.branch_layer, self.depth
        h = x if x.dim() == 3 else x.unsqueeze(0)
        if sizes is None:
            sizes = (K,) if x.dim() == 2 else (1,) * K
        if len(sizes) != h.shape[0] or sum(sizes) != K:
            raise SpecError(f"inputs for {h.shape[0]} groups of sizes {sizes} do not fit a stack of {K} models")
        B = h.shape[1]
        with torch.no_grad():  # `backward` computes the gradients
            ws = [p[f"trunk.{i}.w"] for i in range(b)]
            bs = [p[f"trunk.{i}.b"] for i in range(b)]
            if b > 0 and self.feature_mask is not None:
                ws[0] = ws[0] * self.feature_mask[:, :, None]
            if b == L:
                ws.append(p["head.w"].view(K, H, S * W))
                bs.append(p["head.b"].view(K, 1, S * W))
                # The narrow output layer as a transposed product, (K, S*W, B), then a copy of it.
                pre, acts = _shared_forward(h, sizes, ws, bs, transposed=True, keep=keep)
                out = _slot_major(pre.view(K, S, W, B).permute(1, 2, 0, 3))
                return out, Tape(sizes, acts, ws, [], None) if keep else None
            w = p["tower.0.w"]
            if b == 0 and self.feature_mask is not None:
                w = w * self.feature_mask[:, :, None, None]
            ws.append(w.reshape(K, w.shape[1], S * H))
            bs.append(p["tower.0.b"].view(K, 1, S * H))
            # ReLUs run in place: the backward pass masks with their outputs.
            z0, acts = _shared_forward(h, sizes, ws, bs, transposed=False, keep=keep)
            z0.relu_()
            z = z0.view(K, B, S, H).transpose(1, 2).reshape(K * S, B, H)
            towers = [z] if keep else []
            for i in range(1, L - b):
                z = torch.baddbmm(p[f"tower.{i}.b"].view(K * S, 1, H), z, p[f"tower.{i}.w"].view(K * S, H, H)).relu_()
                if keep:
                    towers.append(z)
            out = torch.baddbmm(p["head.b"].view(K * S, 1, W), z, p["head.w"].view(K * S, H, W))
            out = _slot_major(out.view(K, S, B, W).permute(1, 3, 0, 2))
            return out, Tape(sizes, acts, ws, towers, z0) if keep else None

    def backward(self, tape: Tape, grad: torch.Tensor) -> dict[str, torch.Tensor]:
        """Gradients of every parameter (same names and shapes as `params`) given the gradient
        (K, S, W, B) of a loss with respect to `forward_with_tape`'s output, by hand: a step then
        runs no autograd graph, whose engine and per-node bookkeeping cost more here than the
        few small operations they would run. Tested against single `nn.Module`s' autograd."""
        p = self.params
        S, W, H = self.layout.n_slots, self.layout.out_width, self.width
        K = p["head.w"].shape[0]
        b, L = self.branch_layer, self.depth
        B = grad.shape[3]
        out: dict[str, torch.Tensor] = {}
        with torch.no_grad():
            if b == L:
                g = grad.reshape(K, S * W, B)
                dws, dbs = _shared_backward(tape.acts, tape.chain_ws, tape.sizes, g, self.col_scale, transposed=True)
                out["head.w"] = dws[-1].reshape(K, H, S, W).contiguous()
                out["head.b"] = dbs[-1].view(K, 1, S, W)
            else:
                g = grad.permute(0, 1, 3, 2).reshape(K * S, B, W)
                zs = tape.towers
                out["head.w"] = torch.bmm(zs[-1].transpose(1, 2), g).view(K, S, H, W)
                out["head.b"] = g.sum(1, keepdim=True).view(K, S, 1, W)
                d = torch.bmm(g, p["head.w"].view(K * S, H, W).transpose(1, 2))
                for i in range(L - b - 1, 0, -1):  # tower layer i + 1: input zs[i - 1], output zs[i]
                    torch.ops.aten.threshold_backward.grad_input(d, zs[i], 0, grad_input=d)
                    out[f"tower.{i}.w"] = torch.bmm(zs[i - 1].transpose(1, 2), d).view(K, S, H, H)
                    out[f"tower.{i}.b"] = d.sum(1, keepdim=True).view(K, S, 1, H)
                    d = torch.bmm(d, p[f"tower.{i}.w"].view(K * S, H, H).transpose(1, 2))
                d = d.view(K, S, B, H).transpose(1, 2).reshape(K, B, S * H)
                assert tape.branch_out is not None
                torch.ops.aten.threshold_backward.grad_input(d, tape.branch_out, 0, grad_input=d)
                dws, dbs = _shared_backward(tape.acts, tape.chain_ws, tape.sizes, d, self.col_scale, transposed=False)
                dw = dws[-1].view(K, -1, S, H)
                out["tower.0.w"] = dw.mul_(self.feature_mask[:, :, None, None]) if b == 0 and self.feature_mask is not None else dw
                out["tower.0.b"] = dbs[-1].view(K, 1, S, H)
            for i in range(b):
                out[f"trunk.{i}.w"], out[f"trunk.{i}.b"] = dws[i], dbs[i]
            if b > 0 and self.feature_mask is not None:
                out["trunk.0.w"].mul_(self.feature_mask[:, :, None])
        return {name: out[name] for name in p}

    def select(self, keep: torch.Tensor) -> StackedMLP:
        """The stack of models `keep` only (indices into the model axis), sharing nothing mutable
        with this one; parameters are new leaf tensors."""
        new = copy.copy(self)
        idx = keep.cpu().numpy()
        new.layout = SlotLayout(self.layout.slot_head[idx], tuple(self.layout.slot_of[i] for i in idx),
                                self.layout.family_slices, self.layout.out_width)
        new.params = {n: t.detach().index_select(0, keep) for n, t in self.params.items()}
        new.feature_mask = None if self.feature_mask is None else self.feature_mask.index_select(0, keep)
        new.col_scale = None if self.col_scale is None else self.col_scale.index_select(0, keep)
        return new

def _slot_major(out: torch.Tensor) -> torch.Tensor:
    """(S, W, K, B) view -> contiguous copy, returned as its (K, S, W, B) view."""
    return out.contiguous().permute(2, 0, 1, 3)


def stack_layer_shapes(*, in_features: int, depth: int, width: int, branch_layer: int, slots: int,
                       out_width: int) -> list[tuple[int, int, int]]:
    """The linear layers of one stacked model, input to output: (inputs, outputs, copies), where
    copies is 1 for a shared layer and the number of slots for a per-target layer."""
    sizes = [in_features] + [width] * depth
    layers = [(sizes[i], width, 1) for i in range(branch_layer)]
    return layers + [(sizes[i], width, slots) for i in range(branch_layer, depth)] + [(width, out_width, slots)]


def stack_matmul_flops(*, models: int, in_features: int, depth: int, width: int, branch_layer: int, slots: int,
                       out_width: int, rows: int, backward: bool) -> int:
    """FLOPs (2 per multiply-add) of the matrix products of a stack on `rows` rows: the forward
    pass, plus with `backward` the weight gradients and the input gradients of every layer but
    the first (the data needs none)."""
    layers = stack_layer_shapes(in_features=in_features, depth=depth, width=width, branch_layer=branch_layer,
                                slots=slots, out_width=out_width)
    total = 0
    for n, (i, o, copies) in enumerate(layers):
        f = 2 * rows * i * o * copies * models
        total += f * ((2 if n == 0 else 3) if backward else 1)
    return total
