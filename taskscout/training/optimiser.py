"""Adam over stacked tensors: torch's fused kernel where it exists, and the allocator setting."""

from __future__ import annotations

import ctypes
import sys

import torch

from taskscout.spec import TrainingSettings


class _FusedAdam:
    """Adam through torch's fused kernel, called directly: the update of
    `torch.optim.Adam(fused=True)` (same state, same arithmetic, tested equal) without that
    class's per-step bookkeeping (profiler hooks, state lookups, grouping by device), which on a
    small stack cost more than the update itself. Betas, eps and amsgrad are torch's defaults."""

    def __init__(self, params: list[torch.Tensor], *, lr: float, weight_decay: float) -> None:
        self.params, self.lr, self.weight_decay = params, lr, weight_decay
        self.state: dict[torch.Tensor, dict[str, torch.Tensor]] = {}

    def step(self) -> None:
        params = [p for p in self.params if p.grad is not None]
        for p in params:
            if p not in self.state:
                self.state[p] = {"step": torch.zeros((), dtype=torch.float32, device=p.device),
                                 "exp_avg": torch.zeros_like(p), "exp_avg_sq": torch.zeros_like(p)}
        states = [self.state[p] for p in params]
        steps = [s["step"] for s in states]
        torch._foreach_add_(steps, 1)
        torch._fused_adam_(params, [p.grad for p in params], [s["exp_avg"] for s in states],
                           [s["exp_avg_sq"] for s in states], [], steps, lr=self.lr, beta1=0.9, beta2=0.999,
                           weight_decay=self.weight_decay, eps=1e-8, amsgrad=False, maximize=False)


def _adam(params: list[torch.Tensor], training: TrainingSettings,
          carry: tuple[torch.optim.Optimizer | _FusedAdam, list[torch.Tensor], torch.Tensor] | None = None
          ) -> torch.optim.Optimizer | _FusedAdam:
    """Adam over stacked tensors (`_FusedAdam` where torch has the fused kernel); with `carry` =
    (old optimiser, its parameters, kept model indices), the kept models' moments and step count
    move over to the new parameters. The parameters need not require gradients: the stacked
    trainer computes them by hand (`StackedMLP.backward`) and sets `.grad` itself."""
    if _fused_ok(params):
        opt: torch.optim.Optimizer | _FusedAdam = _FusedAdam(params, lr=training.lr, weight_decay=training.weight_decay)
    else:
        opt = torch.optim.Adam(params, lr=training.lr, weight_decay=training.weight_decay)
    if carry is not None:
        old, old_params, keep = carry
        for new_p, old_p in zip(params, old_params, strict=True):
            st = old.state.get(old_p)
            if st:
                opt.state[new_p] = {
                    "step": st["step"].clone(),
                    "exp_avg": st["exp_avg"].index_select(0, keep),
                    "exp_avg_sq": st["exp_avg_sq"].index_select(0, keep),
                }
    return opt


_MALLOC_TUNED = False


def _retain_freed_memory() -> None:
    """Keep large freed blocks in the process heap (glibc only, once per process).

    Every training step frees and reallocates the same few megabyte-sized tensors. glibc's
    default adaptive thresholds return such blocks to the OS and then fault them back in, page
    by page, on the next step: a quarter of a stacked step's time on CPU, measured here. Fixed
    thresholds keep them for reuse; the process's peak memory is unchanged.
    """
    global _MALLOC_TUNED
    if _MALLOC_TUNED or not sys.platform.startswith("linux"):
        return
    _MALLOC_TUNED = True
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl): nothing to tune
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    mallopt(m_mmap_threshold, 64 << 20)
    mallopt(m_trim_threshold, 1 << 30)


def preload_optimiser() -> None:
    """Build a torch.optim optimiser once in this process. The first one built in a process
    imports some 800 modules (about 1 s); called before forking stack workers that will build
    one, so that they inherit those modules instead of each importing them again."""
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])


def _fused_ok(params: list[torch.Tensor]) -> bool:
    # The fused Adam kernel runs one pass per tensor (the default runs about ten); same update.
    # It exists on CUDA, and on CPU from torch 2.4 (pyproject allows 2.3).
    devices = ("cpu", "cuda") if torch.torch_version.TorchVersion(torch.__version__) >= (2, 4) else ("cuda",)
    return all(p.device.type in devices and p.dtype in (torch.float32, torch.float64) for p in params)
