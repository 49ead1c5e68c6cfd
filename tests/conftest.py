"""Fixtures shared by several test modules."""

import pytest


@pytest.fixture
def one_torch_thread():
    """Tiny models gain nothing from a second thread, and on a shared CPU it can stall them."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
