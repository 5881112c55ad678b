"""One epoch of (distillation) training and the top-1 / top-5 evaluation, as in the official ``tools/train.py``.

Per iteration: set the lr of this iteration (per-iteration schedule), ``loss = criterion(x, y)`` (the KDLoss
wrapper: frozen teacher under no_grad, one student forward for CE and KD), backward, optimizer step, EMA update.
"""
import math

import torch

from common.dist import all_reduce_sum
from common.log import AverageMeter, Throughput, progress, update_progress

__all__ = ['train_one_epoch', 'evaluate', 'accuracy']


def accuracy(logits, target, topk=(1, 5)):
    """Number of correct predictions in the top-k, for each k (k capped at the number of classes)."""
    maxk = min(max(topk), logits.shape[1])
    pred = logits.topk(maxk, dim=1).indices
    correct = pred.eq(target.view(-1, 1))
    return [correct[:, :min(k, maxk)].any(dim=1).sum().item() for k in topk]


def train_one_epoch(criterion, model, loader, optimizer, scheduler, epoch, device, ema=None, scaler=None,
                    amp=False, desc='train'):
    model.train()
    steps = len(loader)
    loss_m, ori_m, kd_m, acc_m = AverageMeter(), AverageMeter(), AverageMeter(), AverageMeter()
    speed = Throughput()
    lr = optimizer.param_groups[0]['lr']
    bar = progress(loader, total=steps, desc=desc)
    for i, (x, y) in enumerate(bar):
        lr = scheduler.step(epoch * steps + i)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with torch.autocast(device_type=device.type, enabled=amp):
            loss = criterion(x, y)
        value = loss.item()
        if not math.isfinite(value):
            raise FloatingPointError(f'the loss became {value} at epoch {epoch}, iteration {i}: lower the lr')
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        if ema is not None:
            ema.update(model)
        n = x.shape[0]
        loss_m.update(value, n)
        ori_m.update(criterion.ori_loss_value.item(), n)
        kd_m.update(criterion.kd_loss_value.item(), n)
        acc_m.update(100.0 * accuracy(criterion.logits, y, (1,))[0] / n, n)
        speed.update(n)
        update_progress(bar, loss=loss_m.avg, kd=kd_m.avg, lr=lr, img_s=speed.rate)
    return {'train_loss': loss_m.avg, 'ori_loss': ori_m.avg, 'kd_loss': kd_m.avg, 'train_top1': acc_m.avg,
            'lr': lr, 'img_per_s': speed.rate}


@torch.no_grad()
def evaluate(model, loader, device, amp=False, desc='eval'):
    """Top-1 / top-5 (%) and CE loss over the whole loader, summed over processes."""
    model.eval()
    totals = torch.zeros(4, dtype=torch.float64, device=device)     # loss sum, top1, top5, count
    for x, y in progress(loader, total=len(loader), desc=desc):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with torch.autocast(device_type=device.type, enabled=amp):
            logits = model(x)
        logits = logits.float()
        top1, top5 = accuracy(logits, y, (1, 5))
        totals += torch.tensor([torch.nn.functional.cross_entropy(logits, y, reduction='sum').item(), top1, top5,
                                y.shape[0]], dtype=torch.float64, device=device)
    totals = all_reduce_sum(totals)
    count = max(totals[3].item(), 1.0)
    return {'test_loss': totals[0].item() / count, 'top1': 100.0 * totals[1].item() / count,
            'top5': 100.0 * totals[2].item() / count}
