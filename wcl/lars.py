"""LARS as the official WCL code applies it: a wrapper around SGD-momentum that rescales each update."""
import torch

__all__ = ['LARS', 'param_groups']


def param_groups(model, weight_decay=1e-6, no_decay_keys=('bn', 'bias')):
    """Two groups by *name substring*: names containing ``bn`` or ``bias`` get no weight decay and skip the LARS
    scaling (``ignore=True``). The ResNet shortcut BN (``downsample.1.*``) matches neither, as in the official
    run, so it is decayed and scaled."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if any(k in name for k in no_decay_keys) else decay).append(p)
    return [{'params': decay, 'weight_decay': weight_decay, 'ignore': False},
            {'params': no_decay, 'weight_decay': 0.0, 'ignore': True}]


class LARS:
    """Layer-wise adaptive rate scaling around an SGD optimizer (You et al., 2017), official WCL variant.

    For each parameter with a gradient, in a group with ``weight_decay > 0``: ``d = grad + wd * p``; unless the
    group is ``ignore``d, when ``||p|| > 0`` and ``||d|| > 0``: ``d *= trust_coef * ||p|| / (||d|| + eps)``.
    Then the wrapped SGD steps with its own weight decay disabled (``buf = m * buf + d``; ``p -= lr * buf``).
    """

    def __init__(self, optimizer, eps=0.0, trust_coef=0.001):
        self.optim = optimizer
        self.eps = eps
        self.trust_coef = trust_coef

    @property
    def param_groups(self):
        return self.optim.param_groups

    def state_dict(self):
        return self.optim.state_dict()

    def load_state_dict(self, state):
        self.optim.load_state_dict(state)

    def zero_grad(self, set_to_none=True):
        self.optim.zero_grad(set_to_none=set_to_none)

    @torch.no_grad()
    def step(self):
        saved_wd = []
        for group in self.optim.param_groups:
            wd = group.get('weight_decay', 0.0)
            saved_wd.append(wd)
            group['weight_decay'] = 0.0
            for p in group['params']:
                if p.grad is None:
                    continue
                if wd > 0:
                    p.grad.add_(p, alpha=wd)
                if not group.get('ignore', False):
                    p_norm, g_norm = torch.norm(p), torch.norm(p.grad)
                    if p_norm > 0 and g_norm > 0:
                        p.grad.mul_(self.trust_coef * p_norm / (g_norm + self.eps))
        self.optim.step()
        for group, wd in zip(self.optim.param_groups, saved_wd):
            group['weight_decay'] = wd
