import os
import sys

import torch
import torch.nn as nn

FOLDER = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if FOLDER not in sys.path:
    sys.path.insert(0, FOLDER)

torch.set_num_threads(1)


def randomize(module, seed=0):
    """Give every BN non-trivial affine parameters and running statistics, every conv bias random values
    (a 'trained' state: fusion must hold for arbitrary values, not just the init)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g))
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) * 1.5 + 0.5)
            elif isinstance(m, nn.Conv2d):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * 0.3)
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g))
    return module
