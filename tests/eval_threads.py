"""Fixture for the eval tests: one torch thread. The test machine's cores are shared by several
jobs, and there two oversubscribed threads run convolutions many times slower than one."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
