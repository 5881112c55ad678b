"""Per-iteration learning-rate schedules."""
import math

__all__ = ['cosine_lr', 'set_lr']


def cosine_lr(step, total_steps, base_lr, warmup_steps=0, min_lr=0.0, warmup_start_lr=0.0):
    """Linear warm-up from ``warmup_start_lr`` to ``base_lr`` over ``warmup_steps``, then a half cosine from
    ``base_lr`` to ``min_lr`` at ``total_steps``. ``step`` counts iterations from 0."""
    if step < warmup_steps:
        return warmup_start_lr + (base_lr - warmup_start_lr) * step / warmup_steps
    span = max(total_steps - warmup_steps, 1)
    progress = min(max(step - warmup_steps, 0) / span, 1.0)
    return min_lr + 0.5 * (base_lr - min_lr) * (1.0 + math.cos(math.pi * progress))


def set_lr(optimizer, lr):
    """Write ``lr`` into every param group, times the group's ``lr_scale`` when it has one."""
    for group in optimizer.param_groups:
        group['lr'] = lr * group.get('lr_scale', 1.0)
    return lr
