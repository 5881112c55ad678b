"""Training a genotype from scratch (``quark0/darts/cnn/train.py``): SGD, cosine to 0, drop-path ramped
linearly, auxiliary loss, grad clip 5, cutout; the test accuracy of every epoch. Glue: imports common."""
import math
import time

import torch
import torch.nn as nn

from common import dist
from common.data import build_loader, set_epoch
from common.log import AverageMeter, Throughput, progress, update_progress
from common.schedule import set_lr

from data import cifar_transform, make_dataset, num_classes
from model import NetworkCIFAR
from utils import count_parameters


@torch.no_grad()
def evaluate(model, loader, device):
    """(top-1, top-5) in percent over the whole loader, summed over the processes."""
    model.eval()
    tot = torch.zeros(3, device=device)
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        logits, _ = model(x)
        top = logits.topk(min(5, logits.shape[1]), 1).indices
        tot[0] += (top[:, 0] == y).sum()
        tot[1] += (top == y[:, None]).any(1).sum()
        tot[2] += y.numel()
    if dist.get_world_size() > 1:
        tot = dist.all_reduce_sum(tot)
    return float(tot[0] / tot[2] * 100), float(tot[1] / tot[2] * 100)


def cosine_to_zero(lr, epochs):
    """CosineAnnealingLR(T_max=epochs), eta_min 0, stepped once per epoch."""
    return lambda epoch: 0.5 * lr * (1 + math.cos(math.pi * epoch / epochs))


def train_network(run, model, train_set, test_set, *, epochs, batch_size, lr_fn, optimizer, criterion,
                  auxiliary_weight, drop_path_prob, grad_clip, num_workers, seed, start_epoch=0, best=0.0,
                  save_fn=None, desc='train', report_freq=50):
    """Train ``model`` (a NetworkCIFAR / NetworkImageNet) for ``epochs``; returns (top1, top5, best top1)."""
    net = model
    # a free in-degree cell that ignores one of its inputs leaves earlier cells (partly) unused
    full = all(c.preprocess0 is not None and c.preprocess1 is not None for c in net.cells)
    ddp = dist.wrap_ddp(model, run.device, **({} if full else {'find_unused_parameters': True}))
    loader = build_loader(train_set, batch_size, shuffle=True, drop_last=True, num_workers=num_workers, seed=seed)
    test_loader = build_loader(test_set, batch_size, shuffle=False, drop_last=False, num_workers=num_workers)
    top1 = top5 = float('nan')
    for epoch in range(start_epoch, epochs):
        t0 = time.time()
        lr = lr_fn(epoch)
        set_lr(optimizer, lr)
        net.drop_path_prob = drop_path_prob * epoch / epochs
        set_epoch(loader, epoch)
        ddp.train()
        meter, speed = AverageMeter('loss'), Throughput()
        bar = progress(loader, total=len(loader), desc=f'{desc} {epoch}')
        for step, (x, y) in enumerate(bar):
            x, y = x.to(run.device), y.to(run.device)
            logits, logits_aux = ddp(x)
            loss = criterion(logits, y)
            if logits_aux is not None:
                loss = loss + auxiliary_weight * criterion(logits_aux, y)
            if not math.isfinite(loss.item()):
                raise FloatingPointError(f'loss is {loss.item()} at epoch {epoch}, step {step}')
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(net.parameters(), grad_clip)
            optimizer.step()
            meter.update(loss.item(), y.numel())
            speed.update(y.numel() * run.world_size)
            update_progress(bar, loss=meter.avg, lr=lr)
            if (step % report_freq == 0 or step == len(loader) - 1) and not hasattr(bar, 'set_postfix'):
                run.log(f'{desc} epoch {epoch} [{step + 1}/{len(loader)}] loss {meter.avg:.4f} lr {lr:.5f} '
                        f'{speed.rate:.0f} img/s')
        top1, top5 = evaluate(net, test_loader, run.device)
        is_best = top1 > best
        best = max(best, top1)
        metrics = {'phase': desc, 'epoch': epoch, 'loss': meter.avg, 'lr': lr, 'drop_path_prob': net.drop_path_prob,
                   'test_top1': top1, 'test_top5': top5, 'best_top1': best, 'time': time.time() - t0}
        run.log_metrics(metrics)
        if save_fn is not None:
            save_fn(epoch + 1, best, is_best)
    return top1, top5, best


def cifar_train(cfg, run, genotype, settings, resume_state=None, save_extra=None, key='model', desc='train'):
    """Train a NetworkCIFAR of ``genotype`` with ``settings`` (epochs, layers, init_channels, batch_size,
    learning_rate, momentum, weight_decay, drop_path_prob, auxiliary, auxiliary_weight, cutout, cutout_length,
    grad_clip). Checkpoint entries are named ``key``, ``key + '_optimizer'``, ``key + '_epoch'`` so that a
    search run can hold its super-net and its evaluation network(s) in one ``last.pth``. Returns (result dict,
    a function giving the checkpoint entries)."""
    s = settings
    train_set = make_dataset(cfg, 'train', cifar_transform(cfg, True, s.cutout, s.cutout_length))
    test_set = make_dataset(cfg, cfg.data.test_split, cifar_transform(cfg, False))
    classes = num_classes(train_set)
    model = NetworkCIFAR(s.init_channels, classes, s.layers, s.auxiliary, genotype).to(run.device)
    params = count_parameters(model)
    run.log(f'{desc}: NetworkCIFAR C={s.init_channels} layers={s.layers} auxiliary={s.auxiliary}: '
            f'{params:,} params ({params / 1e6:.3f}M, auxiliary head excluded)')
    optimizer = torch.optim.SGD(model.parameters(), s.learning_rate, momentum=s.momentum,
                                weight_decay=s.weight_decay)
    start, best = 0, 0.0
    if resume_state is not None and key in resume_state:
        from common.checkpoint import load_state_dict
        load_state_dict(model, resume_state[key], what=key)
        optimizer.load_state_dict(resume_state[key + '_optimizer'])
        start, best = int(resume_state[key + '_epoch']), float(resume_state.get(key + '_best', 0.0))
        run.log(f'{desc}: resumed at epoch {start}')

    progress_now = {'epoch': start, 'best': best}

    def entries():
        """This training's checkpoint entries (a later phase of a search run keeps them in last.pth)."""
        return {key: model.state_dict(), key + '_optimizer': optimizer.state_dict(),
                key + '_epoch': progress_now['epoch'], key + '_best': progress_now['best']}

    def save_fn(epoch, best_now, is_best):
        progress_now.update(epoch=epoch, best=best_now)
        state = {'epoch': epoch, 'genotype': str(genotype), **entries()}
        state.update(save_extra() if save_extra else {})  # a search run: its own 'epoch' and super-net
        run.save(state, is_best=is_best)

    top1, top5, best = train_network(
        run, model, train_set, test_set, epochs=s.epochs, batch_size=s.batch_size,
        lr_fn=cosine_to_zero(s.learning_rate, s.epochs), optimizer=optimizer, criterion=nn.CrossEntropyLoss(),
        auxiliary_weight=s.auxiliary_weight, drop_path_prob=s.drop_path_prob, grad_clip=s.grad_clip,
        num_workers=cfg.data.num_workers, seed=cfg.seed, start_epoch=start, best=best, save_fn=save_fn, desc=desc,
        report_freq=cfg.report_freq)
    if start >= s.epochs:  # finished before: report the stored figures again
        top1, top5 = evaluate(model, build_loader(test_set, s.batch_size, shuffle=False, drop_last=False),
                              run.device)
    return {'params': params, 'test_top1': top1, 'test_top5': top5, 'best_top1': best}, entries
