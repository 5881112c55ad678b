"""LARS and the LEWEL parameter groups / learning-rate schedule (official ``utils/LARS.py``, ``collect_params``,
``utils/lr_schedule.py``).  Imports only torch and the standard library."""
import math

import torch
from torch.optim.optimizer import Optimizer, required


class LARS(Optimizer):
    """Layer-wise adaptive rate scaling with the semantics of the yaox12 BYOL-PyTorch implementation.

    For a parameter w with gradient g (group ``lars_exclude`` False):

        local_lr = eta * ||w|| / (||g|| + wd * ||w||)
        d        = lr * local_lr * (g + wd * w)
        buf      = momentum * buf + (1 - dampening) * d        (buf = d at the first step)
        w       <- w - buf                                     (nesterov: w - (d + momentum * buf))

    i.e. momentum accumulates the already-scaled update.  Groups with ``lars_exclude=True`` use local_lr = 1
    (a plain ``lr * (g + wd * w)``; their weight decay is 0 in ``collect_params``).  When ||w|| and ||g|| are
    both zero (0/0) local_lr is taken as 1.
    """

    def __init__(self, params, lr=required, momentum=0, dampening=0, weight_decay=0, eta=0.001, nesterov=False):
        if lr is not required and lr < 0.0:
            raise ValueError(f'invalid learning rate: {lr}')
        if momentum < 0.0 or weight_decay < 0.0 or eta < 0.0:
            raise ValueError(f'momentum, weight_decay and eta must be >= 0, got {momentum}, {weight_decay}, {eta}')
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError('nesterov momentum requires a momentum and zero dampening')
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay, eta=eta,
                        nesterov=nesterov, lars_exclude=False)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            wd, momentum, dampening = group['weight_decay'], group['momentum'], group['dampening']
            for p in group['params']:
                if p.grad is None:
                    continue
                g = p.grad
                if group['lars_exclude']:
                    local_lr = 1.0
                else:
                    w_norm, g_norm = torch.norm(p).item(), torch.norm(g).item()
                    denom = g_norm + wd * w_norm
                    local_lr = group['eta'] * w_norm / denom if denom > 0 else 1.0
                d_p = g.add(p, alpha=wd).mul(local_lr * group['lr'])
                if momentum != 0:
                    state = self.state[p]
                    if 'momentum_buffer' not in state:
                        buf = state['momentum_buffer'] = torch.clone(d_p).detach()
                    else:
                        buf = state['momentum_buffer']
                        buf.mul_(momentum).add_(d_p, alpha=1 - dampening)
                    d_p = d_p.add(buf, alpha=momentum) if group['nesterov'] else buf
                p.add_(-d_p)
        return loss


def is_excluded(name, sync_bn=True):
    """Official rule: names containing ``bn``, ``downsample.1`` or ``bias`` (and ``mlp.1``, the BatchNorm1d of
    the necks and predictors, when ``sync_bn``) get no weight decay and no LARS adaptation."""
    return 'bn' in name or 'downsample.1' in name or 'bias' in name or (sync_bn and 'mlp.1' in name)


def collect_params(model, exclude_bias_and_bn=True, sync_bn=True):
    """Two LARS groups: ``[{excluded, weight_decay 0, lars_exclude True}, {the rest}]``.

    The official script passes ``sync_bn='EMAN' in arch`` (so the EMAN runs exclude ``mlp.1.*`` and the SyncBN
    run does not).  Only trainable parameters are listed (the target network never gets a gradient).
    """
    excluded, regular = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (excluded if exclude_bias_and_bn and is_excluded(name, sync_bn) else regular).append(param)
    return [{'params': excluded, 'weight_decay': 0., 'lars_exclude': True}, {'params': regular}]


def learning_rate(base_lr, epoch, it, iters_per_epoch, epochs, warmup_epochs=0, cos=True, schedule=(120, 160)):
    """Official LEWEL schedule.  Warm-up (epoch < warmup_epochs): per iteration,
    lr = base_lr * (epoch * iters + it + 1) / (warmup_epochs * iters).  Afterwards constant within an epoch:
    cosine base_lr * 0.5 * (1 + cos(pi (epoch - warmup) / (epochs - warmup))), or x0.1 at each ``schedule``
    milestone when ``cos`` is False."""
    if epoch < warmup_epochs:
        step = epoch * iters_per_epoch + it + 1
        return base_lr * min(1.0, max(0.0, step / max(1, warmup_epochs * iters_per_epoch)))
    if cos:
        progress = (epoch - warmup_epochs) / max(epochs - warmup_epochs, 1)
        return base_lr * 0.5 * (1.0 + math.cos(math.pi * progress))
    return base_lr * 0.1 ** sum(epoch >= m for m in schedule)
