"""Evaluation training of a derived genotype (quark0/darts ``train.py``): drop-path ramp, auxiliary loss,
grad clipping; per-epoch learning-rate schedules of the CIFAR (cosine) and ImageNet (step / linear) recipes."""
import math
import time

import torch
import torch.nn as nn

from common import dist
from common.data import set_epoch
from common.log import progress, update_progress
from utils import AvgrageMeter, accuracy


def epoch_lr(epoch, args):
    """Learning rate of ``epoch`` (set at its start). cosine: DARTS CIFAR (to learning_rate_min); step: x gamma
    every decay_period epochs (DARTS ImageNet); linear: to 0 (PC-DARTS ImageNet); linear warm-up first."""
    base, epochs = args.learning_rate, args.epochs
    if epoch < args.warmup_epochs:
        return base * (epoch + 1) / args.warmup_epochs
    if args.lr_scheduler == 'cosine':
        return args.learning_rate_min + 0.5 * (base - args.learning_rate_min) * (1 + math.cos(math.pi * epoch / epochs))
    if args.lr_scheduler == 'step':
        return base * args.gamma ** (epoch // args.decay_period)
    return base * (1 - epoch / epochs)  # linear


def train(train_queue, model, ddp_model, criterion, optimizer, args, device, desc='train'):
    """One epoch. Returns (top-1, loss)."""
    objs, top1 = AvgrageMeter(), AvgrageMeter()
    ddp_model.train()
    bar = progress(train_queue, desc=desc)
    for input, target in bar:
        input, target = input.to(device, non_blocking=True), target.to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        logits, logits_aux = ddp_model(input)
        loss = criterion(logits, target)
        if args.auxiliary and logits_aux is not None:
            loss = loss + args.auxiliary_weight * criterion(logits_aux, target)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
        optimizer.step()
        n = input.shape[0]
        objs.update(loss.item(), n)
        top1.update(accuracy(logits.detach(), target)[0].item(), n)
        update_progress(bar, loss=f'{objs.avg:.3f}', acc=f'{top1.avg:.1f}')
    return top1.avg, objs.avg


@torch.no_grad()
def infer(loader, model, criterion, device):
    """(top-1 %, top-5 %, loss) on ``loader``, summed over ranks."""
    model.eval()
    sums = torch.zeros(4, dtype=torch.float64, device=device)
    for input, target in loader:
        input, target = input.to(device), target.to(device)
        logits, _ = model(input)
        k = min(5, logits.shape[1])
        topk = logits.topk(k, 1).indices
        sums[0] += (topk[:, 0] == target).sum()
        sums[1] += (topk == target[:, None]).any(1).sum()
        sums[2] += criterion(logits, target).item() * target.shape[0]
        sums[3] += target.shape[0]
    if dist.get_world_size() > 1:
        sums = dist.all_reduce_sum(sums)
    n = max(float(sums[3]), 1.0)
    return 100.0 * float(sums[0]) / n, 100.0 * float(sums[1]) / n, float(sums[2]) / n


def run_training(run, model, optimizer, train_queue, test_queue, args, start_epoch, save, epoch_offset=0,
                 desc='train', label_smoothing=0.0, best=0.0):
    """Train ``model`` for args.epochs from ``start_epoch``; ``save(state, is_best)`` checkpoints each epoch.

    Returns a dict with the last-epoch test top-1 / top-5 and the best top-1.
    """
    device = run.device
    criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
    eval_criterion = nn.CrossEntropyLoss()
    ddp_model = dist.wrap_ddp(model, device)
    last = {'top1': float('nan'), 'top5': float('nan')}
    for epoch in range(start_epoch, args.epochs):
        lr = epoch_lr(epoch, args)
        for g in optimizer.param_groups:
            g['lr'] = lr
        model.drop_path_prob = args.drop_path_prob * epoch / args.epochs
        set_epoch(train_queue, epoch)
        t0 = time.time()
        train_acc, train_loss = train(train_queue, model, ddp_model, criterion, optimizer, args, device,
                                      desc=f'{desc} {epoch}')
        top1, top5, test_loss = infer(test_queue, model, eval_criterion, device)
        is_best = top1 > best
        best = max(best, top1)
        last = {'top1': top1, 'top5': top5}
        run.log_metrics({'phase': 'train', 'epoch': epoch_offset + epoch, 'train_epoch': epoch, 'lr': lr,
                         'drop_path_prob': model.drop_path_prob, 'train_acc': train_acc, 'train_loss': train_loss,
                         'test_top1': top1, 'test_top5': top5, 'test_loss': test_loss, 'best_top1': best,
                         'time': time.time() - t0})
        save({'model': model.state_dict(), 'optimizer': optimizer.state_dict(), 'best_acc': best,
              'epoch': epoch_offset + epoch + 1}, is_best)
    if start_epoch >= args.epochs:  # resumed after the last epoch: evaluate the checkpoint
        last['top1'], last['top5'], _ = infer(test_queue, model, eval_criterion, device)
    return {'top1': last['top1'], 'top5': last['top5'], 'best_top1': best}
