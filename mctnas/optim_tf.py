"""Pieces of the retraining recipe of the searched ImageNet models (``mbv2_se``): RMSprop in its TensorFlow
form, model EMA, and the step-decay schedule with linear warm-up."""
import copy

import torch


class RMSpropTF(torch.optim.Optimizer):
    """RMSprop as in TensorFlow: mean-square state starts at 1, eps sits inside the square root, momentum
    applied to the scaled gradient (lr folded into the momentum buffer), L2 weight decay added to the gradient.

    v <- alpha v + (1 - alpha) g^2;  buf <- momentum buf + lr g / sqrt(v + eps);  p <- p - buf
    """

    def __init__(self, params, lr=0.01, alpha=0.9, eps=1e-3, weight_decay=0.0, momentum=0.9):
        if lr < 0 or eps < 0 or not 0 <= alpha < 1 or momentum < 0 or weight_decay < 0:
            raise ValueError('invalid RMSpropTF hyperparameter')
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum))

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            for p in group['params']:
                if p.grad is None:
                    continue
                g = p.grad
                if group['weight_decay']:
                    g = g.add(p, alpha=group['weight_decay'])
                state = self.state[p]
                if not state:
                    state['square_avg'] = torch.ones_like(p)
                    state['momentum_buffer'] = torch.zeros_like(p)
                v = state['square_avg']
                v.mul_(group['alpha']).addcmul_(g, g, value=1 - group['alpha'])
                step = g / (v + group['eps']).sqrt()
                buf = state['momentum_buffer']
                buf.mul_(group['momentum']).add_(step, alpha=group['lr'])
                p.sub_(buf)
        return loss


class ModelEma:
    """Exponential moving average of a model's parameters and buffers: ema <- d ema + (1 - d) model."""

    def __init__(self, model, decay=0.9998):
        self.module = copy.deepcopy(model).eval()
        self.decay = decay
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model):
        for e, m in zip(self.module.state_dict().values(), model.state_dict().values()):
            if e.dtype.is_floating_point:
                e.mul_(self.decay).add_(m.detach(), alpha=1 - self.decay)
            else:
                e.copy_(m)

    def state_dict(self):
        return self.module.state_dict()

    def load_state_dict(self, state):
        self.module.load_state_dict(state)


def step_decay_lr(epoch_float, base_lr, decay_epochs, decay_rate, warmup_epochs=0, warmup_lr=1e-6):
    """Linear warm-up from ``warmup_lr`` over ``warmup_epochs``, then ``base_lr * decay_rate ** (epoch //
    decay_epochs)`` (timm's step scheduler, as used by the official retraining recipes)."""
    if epoch_float < warmup_epochs:
        return warmup_lr + (base_lr - warmup_lr) * epoch_float / warmup_epochs
    return base_lr * decay_rate ** int(epoch_float // decay_epochs)
