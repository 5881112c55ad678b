"""The official WCL learning-rate schedule (per iteration)."""
import math

__all__ = ['adjust_learning_rate', 'base_lr_for_batch']


def base_lr_for_batch(global_batch, lr_per_sqrt_batch=0.075):
    """Square-root scaling: ``base_lr = 0.075 * sqrt(B)`` (4.8 for B = 4096)."""
    return lr_per_sqrt_batch * math.sqrt(global_batch)


def adjust_learning_rate(optimizer, epoch, base_lr, i, iteration_per_epoch, epochs, warm_up=10):
    """Linear warm-up from 0 over ``warm_up`` epochs, then a half cosine to 0; written into every group.

    With ``T = epoch * I + i``: ``lr = base * T / (W * I)`` for ``epoch < W``, else
    ``lr = 1/2 base (1 + cos(pi (T - W I) / ((E - W) I)))``.
    """
    T = epoch * iteration_per_epoch + i
    warmup_iters = warm_up * iteration_per_epoch
    total_iters = (epochs - warm_up) * iteration_per_epoch
    if epoch < warm_up:
        lr = base_lr * 1.0 * T / warmup_iters
    else:
        T = T - warmup_iters
        lr = 0.5 * base_lr * (1 + math.cos(1.0 * T / total_iters * math.pi))
    for group in optimizer.param_groups:
        group['lr'] = lr
    return lr
