"""Turning the `device` setting into a torch device: `auto` picks CUDA when present; and the
BLAS threads of the numpy/scipy linear algebra after training."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from taskscout.errors import DeviceError


def resolve_device(name: str = "auto") -> Any:
    """A `torch.device` for 'auto', 'cpu' or 'cuda'; 'cuda' without CUDA is an error."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceError(f"device {name!r} was requested but CUDA is not available on this machine; use --device cpu or auto")
        return torch.device(name)
    if name == "cpu":
        return torch.device("cpu")
    raise DeviceError(f"device must be 'auto', 'cpu' or 'cuda'. Got {name!r} instead.")


@contextlib.contextmanager
def one_blas_thread() -> Iterator[None]:
    """numpy/scipy linear algebra on one BLAS thread inside the block.

    The grouping stage solves many small systems (a surrogate's 100-200 terms, an
    eigendecomposition of T x T). OpenBLAS splits each over its threads, which spin while they
    wait; with other processes on the cores (a search training its stacks, other searches) that
    made a 139-task surrogate fit 2.7 s per task instead of 0.06 s on one thread (2 cores, load 5).
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        yield
