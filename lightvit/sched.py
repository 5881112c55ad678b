"""The LightViT learning-rate schedule (pure function of the iteration)."""
import math


def warmup_cosine(step, steps_per_epoch, warmup_epochs, base_lr, warmup_lr, min_lr, total_steps):
    """LR at iteration ``step`` (0-based).

    Warm-up is a per-epoch staircase: during epoch ``e < warmup_epochs`` the LR is
    ``warmup_lr + (base_lr - warmup_lr) * e / warmup_epochs``. Afterwards a half cosine runs per
    iteration from ``base_lr`` at the first post-warm-up step to ``min_lr`` at ``total_steps``.
    """
    warmup_steps = warmup_epochs * steps_per_epoch
    if step < warmup_steps:
        epoch = step // steps_per_epoch
        return warmup_lr + (base_lr - warmup_lr) * epoch / warmup_epochs
    span = max(1, total_steps - warmup_steps)
    t = min(step - warmup_steps, span) / span
    return min_lr + 0.5 * (base_lr - min_lr) * (1. + math.cos(math.pi * t))
