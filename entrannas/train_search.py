"""The search loop (quark0/darts ``train_search.py``): per step an architecture step on a validation batch, then a
weight step on a training batch, with S_j re-derived after every architecture update (inside ``Architect.step``)."""
import time

import torch
import torch.nn as nn

from common import dist
from common.data import set_epoch
from common.log import progress, update_progress
from utils import AvgrageMeter, accuracy


class Cycle:
    """An endless iterator over a loader (a new epoch of its sampler each pass): the validation queue."""

    def __init__(self, loader, epoch=0):
        self.loader, self.epoch, self._it = loader, epoch, None

    def __next__(self):
        if self._it is None:
            set_epoch(self.loader, self.epoch)
            self._it = iter(self.loader)
        try:
            return next(self._it)
        except StopIteration:
            self.epoch += 1
            set_epoch(self.loader, self.epoch)
            self._it = iter(self.loader)
            return next(self._it)


def epoch_lr(epoch, epochs, base, minimum, warmup_epochs=0):
    """DARTS CosineAnnealingLR stepped at each epoch start (epoch e uses cos(pi e / epochs)); optional linear
    warm-up over the first ``warmup_epochs`` (PC-DARTS ImageNet search)."""
    import math
    if epoch < warmup_epochs:
        return base * (epoch + 1) / warmup_epochs
    return minimum + 0.5 * (base - minimum) * (1 + math.cos(math.pi * epoch / epochs))


def train(train_queue, valid_iter, model, ddp_model, architect, criterion, optimizer, lr, args, device,
          update_arch, desc='search'):
    """One search epoch. Returns (train top-1, train loss, mean architecture (valid) loss, images/s)."""
    objs, top1, arch_objs = AvgrageMeter(), AvgrageMeter(), AvgrageMeter()
    ddp_model.train()
    t0, seen = time.time(), 0
    bar = progress(train_queue, desc=desc)
    for input, target in bar:
        input, target = input.to(device, non_blocking=True), target.to(device, non_blocking=True)
        if update_arch:
            input_search, target_search = next(valid_iter)
            input_search, target_search = input_search.to(device), target_search.to(device)
            arch_objs.update(architect.step(input, target, input_search, target_search, lr, optimizer,
                                            args.unrolled), input.shape[0])
        optimizer.zero_grad(set_to_none=True)  # ops outside S_j get no grad: no decay, no momentum step
        logits = ddp_model(input)
        loss = criterion(logits, target)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
        optimizer.step()
        n = input.shape[0]
        objs.update(loss.item(), n)
        top1.update(accuracy(logits.detach(), target)[0].item(), n)
        seen += n
        update_progress(bar, loss=f'{objs.avg:.3f}', acc=f'{top1.avg:.1f}', lr=f'{lr:.4f}')
    rate = seen / max(time.time() - t0, 1e-9)
    return top1.avg, objs.avg, arch_objs.avg if arch_objs.cnt else None, rate


@torch.no_grad()
def infer(loader, model, criterion, device):
    """Top-1 (%) and loss of the super-net (the derived sub-net in Transit-cells) on ``loader``, over ranks."""
    model.eval()
    sums = torch.zeros(3, dtype=torch.float64, device=device)  # correct, loss sum, count
    for input, target in loader:
        input, target = input.to(device), target.to(device)
        logits = model(input)
        sums[0] += (logits.argmax(1) == target).sum()
        sums[1] += criterion(logits, target).item() * target.shape[0]
        sums[2] += target.shape[0]
    if dist.get_world_size() > 1:
        sums = dist.all_reduce_sum(sums)
    n = max(float(sums[2]), 1.0)
    return 100.0 * float(sums[0]) / n, float(sums[1]) / n
