"""Parameter and MAC counts of real ``nn.Module`` networks (forward hooks), Channel-Bench-Macro rules.

* ``count_params``: every parameter (conv/linear weights and biases, BN gamma and beta).
* ``count_macs``: Cin/groups * Cout * k^2 * Hout * Wout of every conv plus in * out of every linear layer, at
  ``input_shape``. Sliced dynamic layers are counted at their active width (from the tensors they see).

``torch.utils.flop_counter.FlopCounterMode`` gives exactly 2x ``count_macs`` on these networks.
"""
import torch
import torch.nn as nn

__all__ = ['count_params', 'count_macs']


def count_params(model):
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_macs(model, input_shape=(3, 32, 32)):
    total = [0]

    def conv_hook(m, inputs, out):
        cin = inputs[0].shape[1]
        groups = cin if getattr(m, 'depthwise', False) else m.groups
        total[0] += (cin // groups) * out.shape[1] * m.kernel_size[0] * m.kernel_size[1] * out.shape[2] * out.shape[3]

    def linear_hook(m, inputs, out):
        total[0] += inputs[0].shape[-1] * out.shape[-1]

    hooks = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(linear_hook))
    was_training = model.training
    model.eval()
    p = next(model.parameters())
    try:
        model(torch.zeros((1,) + tuple(input_shape), device=p.device, dtype=p.dtype))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return total[0]
