"""Optimizers of the official recipes: SGD (B1 Nesterov; CIFAR plain momentum, decay on all parameters),
PyTorch RMSprop, and TensorFlow-style RMSprop (B2).

``build_optimizer(opt, model, lr, eps, momentum, weight_decay, filter_bias_and_bn, nesterov)`` mirrors the
official ``lib/utils/optim.py``: with ``filter_bias_and_bn`` (the default; ``opt_no_filter`` in the configs
turns it off) biases and every 1-D parameter (BN/LN affine) are put in a group without weight decay.
"""
import torch
from torch.optim import Optimizer

__all__ = ['build_optimizer', 'param_groups', 'RMSpropTF']

OPTIMIZERS = ('sgd', 'rmsprop', 'rmsproptf')


def param_groups(model, weight_decay, filter_bias_and_bn=True):
    """Two groups (no decay: biases and 1-D params; decay: the rest) or one group with ``weight_decay``."""
    if weight_decay != 0 and filter_bias_and_bn:
        decay, no_decay = [], []
        for name, p in model.named_parameters():
            if not p.requires_grad:
                continue
            (no_decay if p.ndim == 1 or name.endswith('.bias') else decay).append(p)
        return [{'params': no_decay, 'weight_decay': 0.0}, {'params': decay, 'weight_decay': weight_decay}]
    return [{'params': [p for p in model.parameters() if p.requires_grad], 'weight_decay': weight_decay}]


def build_optimizer(opt, model, lr, eps=1e-10, momentum=0.9, weight_decay=1e-5, filter_bias_and_bn=True,
                    nesterov=True):
    groups = param_groups(model, weight_decay, filter_bias_and_bn)
    if opt == 'sgd':
        return torch.optim.SGD(groups, lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)
    if opt == 'rmsprop':
        return torch.optim.RMSprop(groups, lr, eps=eps, weight_decay=weight_decay, momentum=momentum)
    if opt == 'rmsproptf':
        return RMSpropTF(groups, lr, eps=eps, weight_decay=weight_decay, momentum=momentum)
    raise ValueError(f"unknown optimizer {opt!r}; known: {', '.join(OPTIMIZERS)}")


class RMSpropTF(Optimizer):
    """RMSprop with TensorFlow's conventions (the ``rmsproptf`` of timm and of the official code).

    Per step, with g the gradient (+ weight_decay * p as an L2 term unless ``decoupled_decay``):

        v <- v + (1 - alpha) (g^2 - v)          v initialised to ONES (PyTorch: zeros)
        d  = sqrt(v + eps)                       eps INSIDE the square root (PyTorch: sqrt(v) + eps)
        b <- momentum * b + lr * g / d           the lr is folded into the momentum buffer (``lr_in_momentum``)
        p <- p - b

    ``centered`` subtracts the squared running mean of g inside the root.
    """

    def __init__(self, params, lr=1e-2, alpha=0.9, eps=1e-10, weight_decay=0, momentum=0.0, centered=False,
                 decoupled_decay=False, lr_in_momentum=True):
        if lr < 0 or eps < 0 or momentum < 0 or weight_decay < 0 or alpha < 0:
            raise ValueError('lr, eps, momentum, weight_decay and alpha must be non-negative')
        defaults = dict(lr=lr, momentum=momentum, alpha=alpha, eps=eps, centered=centered, weight_decay=weight_decay,
                        decoupled_decay=decoupled_decay, lr_in_momentum=lr_in_momentum)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group['params']:
                if p.grad is None:
                    continue
                grad = p.grad
                state = self.state[p]
                if len(state) == 0:
                    state['step'] = 0
                    state['square_avg'] = torch.ones_like(p)
                    if group['momentum'] > 0:
                        state['momentum_buffer'] = torch.zeros_like(p)
                    if group['centered']:
                        state['grad_avg'] = torch.zeros_like(p)
                state['step'] += 1
                one_minus_alpha = 1.0 - group['alpha']
                if group['weight_decay'] != 0:
                    if group['decoupled_decay']:
                        p.mul_(1.0 - group['lr'] * group['weight_decay'])
                    else:
                        grad = grad.add(p, alpha=group['weight_decay'])
                square_avg = state['square_avg']
                square_avg.add_(grad.pow(2) - square_avg, alpha=one_minus_alpha)
                if group['centered']:
                    grad_avg = state['grad_avg']
                    grad_avg.add_(grad - grad_avg, alpha=one_minus_alpha)
                    avg = square_avg.addcmul(grad_avg, grad_avg, value=-1).add_(group['eps']).sqrt_()
                else:
                    avg = square_avg.add(group['eps']).sqrt_()
                if group['momentum'] > 0:
                    buf = state['momentum_buffer']
                    if group['lr_in_momentum']:
                        buf.mul_(group['momentum']).addcdiv_(grad, avg, value=group['lr'])
                        p.sub_(buf)
                    else:
                        buf.mul_(group['momentum']).addcdiv_(grad, avg)
                        p.sub_(buf, alpha=group['lr'])
                else:
                    p.addcdiv_(grad, avg, value=-group['lr'])
        return loss
