"""Turning the `device` setting into a torch device: `auto` picks CUDA when present."""

from __future__ import annotations

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
