"""The per-iteration learning-rate schedule of the official code (``lib/utils/scheduler.py``) in closed form.

``s`` is the index of the iteration about to run (``epoch * steps_per_epoch + batch_idx``), ``W`` the warm-up
length and ``spe`` the iterations per epoch. The official ``GradualWarmupScheduler`` gives

* warm-up (``W > 0`` and ``s <= W``): a per-epoch *staircase*, constant inside an epoch:
  ``warmup_lr + (lr - warmup_lr) * floor(s / spe) * spe / W``;
* afterwards the wrapped scheduler at step ``t = s - W - 1`` (``t = s`` without warm-up):
  ``step``:   ``lr * decay_rate ** floor(t / decay_steps)``  (``decay_steps`` may be fractional: 2.4 epochs);
  ``cosine``: ``min_lr + (lr - min_lr) (1 + cos(pi t / (total_steps - W))) / 2``, ``t`` floored to whole epochs
  when ``decay_by_epoch``;
  ``linear``: ``lr * (total_steps - W - t) / (total_steps - W)``.

The CIFAR recipe writes its schedule as a 120-epoch "warm-up" at the full lr followed by a step decay every
30 epochs: the lr drops by 10x at epochs 150, 180 and 210 (one iteration into the epoch, as in the official
code). Being stateless, the schedule resumes exactly from any iteration.
"""
import math

__all__ = ['build_scheduler', 'WarmupScheduler', 'SCHEDULERS']

SCHEDULERS = ('step', 'cosine', 'linear')


class WarmupScheduler:
    def __init__(self, optimizer, sched, base_lr, warmup_steps, warmup_lr, decay_steps, decay_rate, total_steps,
                 steps_per_epoch=1, decay_by_epoch=False, min_lr=1e-5):
        if sched not in SCHEDULERS:
            raise ValueError(f"unknown scheduler {sched!r}; known: {', '.join(SCHEDULERS)}")
        if sched == 'step' and decay_steps <= 0:
            raise ValueError('the step scheduler needs decay_steps > 0')
        self.optimizer = optimizer
        self.sched, self.base_lr = sched, base_lr
        self.warmup_steps, self.warmup_lr = warmup_steps, warmup_lr
        self.decay_steps, self.decay_rate = decay_steps, decay_rate
        self.total_steps, self.steps_per_epoch = total_steps, max(int(steps_per_epoch), 1)
        self.decay_by_epoch, self.min_lr = decay_by_epoch, min_lr
        self.step(0)

    def lr_at(self, s):
        W, spe, lr = self.warmup_steps, self.steps_per_epoch, self.base_lr
        if W > 0 and s <= W:
            return self.warmup_lr + (lr - self.warmup_lr) * (s // spe * spe) / W
        t = s if W <= 0 else s - W - 1
        if self.sched == 'step':
            return lr * self.decay_rate ** math.floor(t / self.decay_steps)
        span = max(self.total_steps - max(W, 0), 1)
        if self.sched == 'cosine':
            if self.decay_by_epoch:
                t = t // spe * spe
            return self.min_lr + (lr - self.min_lr) * (1 + math.cos(math.pi * t / span)) / 2
        return lr * (span - t) / span

    def step(self, s):
        """Set the lr of every parameter group for iteration ``s``; returns it."""
        lr = self.lr_at(s)
        for group in self.optimizer.param_groups:
            group['lr'] = lr
        return lr


def build_scheduler(sched, optimizer, warmup_steps, warmup_lr, decay_steps, decay_rate, total_steps=-1,
                    steps_per_epoch=1, decay_by_epoch=False, min_lr=1e-5):
    """The official ``build_scheduler`` signature; the base lr is the optimizer's initial lr."""
    base_lr = optimizer.param_groups[0].get('initial_lr', optimizer.param_groups[0]['lr'])
    for group in optimizer.param_groups:
        group.setdefault('initial_lr', base_lr)
    return WarmupScheduler(optimizer, sched, base_lr, warmup_steps, warmup_lr, decay_steps, decay_rate,
                           total_steps, steps_per_epoch, decay_by_epoch, min_lr)
