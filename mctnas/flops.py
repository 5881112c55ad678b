"""Parameter and FLOPs counting the way NAS-Bench-Macro and the paper count them.

FLOPs are multiply-accumulates (MACs) of convolutions and linear layers only: Cin/groups * k^2 * Cout * Hout *
Wout per conv, in * out per linear (no bias term); nothing for BN, activations, pooling or residual adds.
``torch.utils.flop_counter.FlopCounterMode`` gives exactly twice this number.
"""
import torch
import torch.nn as nn


def count_params(model):
    """Sum of ``numel`` over parameters (BN running buffers are not parameters)."""
    return sum(p.numel() for p in model.parameters())


def _layer_macs(m, out):
    if isinstance(m, nn.Conv2d):
        kh, kw = m.kernel_size
        return m.in_channels // m.groups * kh * kw * m.out_channels * out.shape[-2] * out.shape[-1]
    if isinstance(m, nn.Linear):
        return m.in_features * m.out_features
    return 0


@torch.no_grad()
def count_macs(model, input_shape=(1, 3, 32, 32)):
    """MACs of conv + linear layers for one sample of ``input_shape`` (batch dim included, counted per sample)."""
    total = [0]

    def hook(m, inp, out):
        total[0] += _layer_macs(m, out)

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    model.eval()
    try:
        model(torch.zeros(1, *input_shape[1:]))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return total[0]


class SubnetCost:
    """Exact params/MACs of every path of a single-path supernet, from one pass over its candidate ops.

    The supernet must expose ``choice_modules`` (each with ``.ops``) and ``set_subnet``. The cost of a path is
    the fixed part (stem, head, ...) plus the chosen op's cost at every layer, which is exact because the
    layers are independent modules. ``macs(arch)`` and ``params(arch)`` are then O(layers).
    """

    @torch.no_grad()
    def __init__(self, supernet, input_shape=(1, 3, 32, 32)):
        inputs = {}
        mods = supernet.choice_modules
        handles = [m.register_forward_pre_hook(lambda m, i, idx=idx: inputs.__setitem__(idx, i[0].shape))
                   for idx, m in enumerate(mods)]
        supernet.set_subnet([0] * len(mods))
        try:
            total_macs = count_macs(supernet, input_shape)
        finally:
            for h in handles:
                h.remove()
        total_params = count_params(supernet)
        self.op_macs, self.op_params = [], []
        for idx, m in enumerate(mods):
            shape = (1,) + tuple(inputs[idx][1:])
            self.op_macs.append([count_macs(op, shape) for op in m.ops])
            self.op_params.append([count_params(op) for op in m.ops])
        self.fixed_macs = total_macs - sum(row[0] for row in self.op_macs)
        self.fixed_params = total_params - sum(sum(row) for row in self.op_params)

    def macs(self, arch):
        return self.fixed_macs + sum(row[int(a)] for row, a in zip(self.op_macs, arch))

    def params(self, arch):
        return self.fixed_params + sum(row[int(a)] for row, a in zip(self.op_params, arch))

    __call__ = macs
