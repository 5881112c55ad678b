import os
import sys

import pytest
import torch

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if HERE not in sys.path:
    sys.path.insert(0, HERE)
torch.set_num_threads(1)

CP4 = (0.25, 0.5, 0.75, 1.0)


def tiny_supernet(**kw):
    """A 32-px supernet small enough for exact checks (random, non-zero tokens and tables)."""
    from supernet import ViTASSuperNet
    args = dict(patch_sizes=(8, 16), embed_dim=32, depth=4, heads=(1, 2, 4), at_temp=96,
                mlp_dim=64, num_classes=5, img_size=32, channel_percent=CP4)
    args.update(kw)
    torch.manual_seed(0)
    net = ViTASSuperNet(**args)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.2)
    return net


@pytest.fixture
def supernet():
    return tiny_supernet()
