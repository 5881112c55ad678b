"""One SimMatch training epoch over a labeled and an unlabeled stream, the learning-rate schedules, validation."""
import math

import torch

from common.data import set_epoch
from common.dist import all_reduce_sum, get_rank, get_world_size, unwrap
from common.log import AverageMeter, Throughput, progress, update_progress
from common.schedule import set_lr

__all__ = ['adjust_learning_rate', 'train_one_epoch', 'validate', 'LR_SCHEDULES']

LR_SCHEDULES = ('cos', 'step', 'fixmatch_cos')


def adjust_learning_rate(optimizer, cfg, epoch, i, iters_per_epoch):
    """Set and return the lr of iteration ``i`` of ``epoch``.

    * ``cos`` (official ImageNet, ``--cos``): linear warm-up per step over ``warmup_epoch`` epochs
      (``lr * step / warmup_steps``, step counted from 1), then a half cosine *per epoch*
      ``lr * 0.5 * (1 + cos(pi * (e - w) / (epochs - w)))``.
    * ``step`` (official without ``--cos``): the same warm-up, then ``lr * 0.1 ** #(milestones <= e)``.
    * ``fixmatch_cos`` (USB/FixMatch): ``lr * cos(7 pi k / (16 K))`` per iteration, ``K`` the total iterations.
    """
    lr, w = cfg.lr, cfg.warmup_epoch
    if cfg.lr_schedule == 'fixmatch_cos':
        k, total = epoch * iters_per_epoch + i, cfg.epochs * iters_per_epoch
        lr = lr * math.cos(7 * math.pi * k / (16 * total))
    elif epoch < w:
        lr = lr * (epoch * iters_per_epoch + i + 1) / (w * iters_per_epoch)
    elif cfg.lr_schedule == 'cos':
        lr = lr * 0.5 * (1. + math.cos(math.pi * (epoch - w) / max(cfg.epochs - w, 1)))
    else:
        lr = lr * 0.1 ** sum(epoch >= m for m in cfg.schedule)
    return set_lr(optimizer, lr)


class _Stream:
    """Endless iteration over a loader; each restart advances its sampler epoch deterministically."""

    def __init__(self, loader, epoch, iters_per_epoch):
        self.loader = loader
        self.sampler_epoch = epoch * math.ceil(iters_per_epoch / len(loader))
        self.it = None

    def next(self):
        if self.it is not None:
            try:
                return next(self.it)
            except StopIteration:
                self.sampler_epoch += 1
        set_epoch(self.loader, self.sampler_epoch)
        self.it = iter(self.loader)
        return next(self.it)


def train_one_epoch(model, criterion, optimizer, loader_x, loader_u, epoch, cfg, device, iters_per_epoch,
                    scaler=None):
    """``iters_per_epoch`` SimMatch steps; returns the epoch's averaged statistics."""
    model.train()
    net = unwrap(model)
    stream_x = _Stream(loader_x, epoch, iters_per_epoch)
    stream_u = _Stream(loader_u, epoch, iters_per_epoch)
    meters = {k: AverageMeter(k) for k in ('loss', 'loss_x', 'loss_u', 'loss_in', 'mask', 'pseudo_acc', 'lr')}
    speed = Throughput()
    start_unlabel = epoch >= cfg.start_unlabel_epoch
    bar = progress(range(iters_per_epoch), total=iters_per_epoch, desc=f'epoch {epoch}')
    for i in bar:
        images_x, targets_x, index = stream_x.next()
        (images_u_w, images_u_s), targets_u = stream_u.next()
        images_x, targets_x, index = images_x.to(device), targets_x.to(device), index.to(device)
        images_u_w, images_u_s, targets_u = images_u_w.to(device), images_u_s.to(device), targets_u.to(device)
        lr = adjust_learning_rate(optimizer, cfg, epoch, i, iters_per_epoch)

        with torch.autocast(device.type, dtype=torch.float16, enabled=scaler is not None):
            logits_x, pseudo_label, logits_u_s, loss_in = model(
                images_x, images_u_w, images_u_s, labels=targets_x, index=index, start_unlabel=start_unlabel)
            loss, stats = criterion(logits_x.float(), targets_x, logits_u_s.float(), pseudo_label.float(),
                                    loss_in.float())
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        net.momentum_update_ema()

        with torch.no_grad():  # accuracy of the confident pseudo-labels (targets_u is used for monitoring only)
            mask = pseudo_label.max(1).values.ge(criterion.threshold)
            if mask.any():
                correct = (pseudo_label.argmax(1)[mask] == targets_u[mask]).float().mean().item()
                meters['pseudo_acc'].update(100. * correct, int(mask.sum()))
        for k, v in stats.items():
            meters[k].update(float(v))
        meters['lr'].update(lr)
        speed.update(images_x.shape[0] + 2 * images_u_w.shape[0])
        update_progress(bar, loss=meters['loss'].avg, mask=meters['mask'].avg, lr=lr, img_s=speed.rate)
    return {k: m.avg for k, m in meters.items()}


@torch.no_grad()
def validate(model, dataset, device, batch_size=256, num_workers=0):
    """Top-1 / top-5 accuracy (%) of ``model`` (images -> logits) on ``dataset``.

    Each process takes every ``world_size``-th image (no padding, so the counts are exact) and the counts are
    summed over processes.
    """
    was_training = model.training
    model.eval()
    rank, world = get_rank(), get_world_size()
    shard = torch.utils.data.Subset(dataset, range(rank, len(dataset), world))
    loader = torch.utils.data.DataLoader(shard, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    counts = torch.zeros(3, dtype=torch.float64, device=device)
    for batch in loader:
        images, targets = batch[0].to(device), batch[1].to(device)
        logits = model(images)
        logits = logits[0] if isinstance(logits, tuple) else logits
        k = min(5, logits.shape[1])
        top = logits.topk(k, dim=1).indices
        counts[0] += (top[:, 0] == targets).sum()
        counts[1] += (top == targets[:, None]).any(dim=1).sum()
        counts[2] += targets.shape[0]
    counts = all_reduce_sum(counts)
    model.train(was_training)
    total = max(counts[2].item(), 1.)
    return 100. * counts[0].item() / total, 100. * counts[1].item() / total

