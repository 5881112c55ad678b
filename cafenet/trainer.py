"""``CafeNetTrainer``: the stochastic min-min training step of CafeNet.

The loss of a width vector is that of its best placement of the free channels,

    l(W; c) = min_{s in S(c)} CE(f(x; W[s]), y),      objective  min_W E_{c ~ U} l(W; c),

estimated per step on K sampled placements (card's step; K = ``num_candidates``, default 2):

1. draw c (uniform per slot) and K placements (uniform members of S(c_l) per slot);
2. forward every placement without grad, BN in train mode (batch statistics) but with the running statistics
   frozen, and compute its loss on the batch (under DDP the K losses are averaged over processes so that every
   process picks the same placement);
3. k* = argmin (the first on ties);
4. forward placement k* again with grad and backward: only the winner receives the gradient.

The caller zeroes the gradients before ``forward`` and steps the optimizer after it. With one distinct
placement (K = 1, r = 0, or every slot at full width) the scoring passes are skipped.
"""
import contextlib

import torch
import torch.distributed as dist
import torch.nn as nn

from ops import frozen_bn_stats

__all__ = ['CafeNetTrainer']


class CafeNetTrainer:
    def __init__(self, num_candidates=2, sampler=None, loss_fn=None, stage='supernet', scaler=None, amp_dtype=None):
        if int(num_candidates) < 1:
            raise ValueError(f'num_candidates must be >= 1, got {num_candidates}')
        self.num_candidates, self.sampler, self.stage = int(num_candidates), sampler, stage
        self.loss_fn = loss_fn if loss_fn is not None else nn.CrossEntropyLoss()
        self.scaler, self.amp_dtype = scaler, amp_dtype
        self.iteration = 0
        self.last = None      # {'widths', 'placements', 'losses', 'chosen'} of the last step
        self.scored_steps = 0
        self.gap_sum = 0.0    # sum over scored steps of (max - min) candidate loss

    def _autocast(self, x):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=x.device.type, dtype=self.amp_dtype)

    @torch.no_grad()
    def score(self, supernet, inputs, targets, widths, placements):
        """Loss of every placement on the batch (no grad, frozen BN statistics), averaged over processes."""
        losses = []
        with frozen_bn_stats(supernet):
            for p in placements:
                supernet.set_width(widths, p)
                with self._autocast(inputs):
                    losses.append(self.loss_fn(supernet(inputs), targets).float())
        losses = torch.stack(losses)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(losses)
            losses /= dist.get_world_size()
        return losses

    def forward(self, model, inputs, targets, widths=None, placements=None):
        """One min-min step (forward + backward). ``widths``/``placements`` override the sampler's draws.

        Returns (output of the winning placement, its loss as a 0-dim tensor).
        """
        if 'supernet' not in self.stage:
            with self._autocast(inputs):
                out = model(inputs)
                loss = self.loss_fn(out, targets)
            (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
            return out, loss.detach()
        supernet = getattr(model, 'module', model)
        self.iteration += 1
        if widths is None:
            widths = self.sampler.sample_widths()
        if placements is None:
            placements = self.sampler.sample_placements(widths, self.num_candidates)
        placements = list(placements)
        losses, chosen = None, 0
        if len(placements) > 1:
            losses = self.score(supernet, inputs, targets, widths, placements)
            chosen = int(torch.argmin(losses))
            self.scored_steps += 1
            self.gap_sum += float(losses.max() - losses.min())
        supernet.set_width(widths, placements[chosen])
        with self._autocast(inputs):
            out = model(inputs)
            loss = self.loss_fn(out, targets)
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
        self.last = {'widths': list(widths), 'placements': placements, 'chosen': chosen,
                     'losses': None if losses is None else losses.tolist()}
        return out, loss.detach()
