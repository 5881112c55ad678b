import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn

FOLDER = Path(__file__).resolve().parents[1]
if str(FOLDER) not in sys.path:
    sys.path.insert(0, str(FOLDER))


class TinyEncoder(nn.Module):
    """A fc-less encoder small enough for exact checks: conv-BN-ReLU-pool, ``out_channels = 6``."""

    def __init__(self, norm_layer=None):
        super().__init__()
        norm_layer = norm_layer or nn.BatchNorm2d
        self.conv = nn.Conv2d(3, 6, 3, padding=1, bias=False)
        self.bn = norm_layer(6)
        self.out_channels = 6

    def forward(self, x):
        return torch.relu(self.bn(self.conv(x))).mean(dim=(2, 3))


@pytest.fixture
def tiny_encoder():
    return TinyEncoder
