import pytest
import torch

from slimlm.models import load

TINY = "tiny:llama?layers=2&hidden=64&heads=4&kv_heads=2&ffn=128&seed=0"


@pytest.fixture
def tiny():
    return load(TINY)


@pytest.fixture
def ids():
    return torch.randint(0, 250, (2, 48), generator=torch.Generator().manual_seed(1))


@pytest.fixture
def calib():
    """Calibration rows with structure (repeated phrases), so calibrated methods have something to fit."""
    g = torch.Generator().manual_seed(2)
    base = torch.randint(4, 260, (6, 16), generator=g)
    rows = [base[torch.randint(0, 6, (4,), generator=g)].reshape(-1) for _ in range(16)]
    return torch.stack(rows)  # (16, 64)




@pytest.fixture
def sharp_tiny():
    """A tiny model with larger weights, so its next-token distribution is peaked and quantization shows."""
    m = load(TINY)
    with torch.no_grad():
        for p in m.hf.parameters():
            if p.dim() == 2:
                p.mul_(4.0)
    return m
