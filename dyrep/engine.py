"""Data pipelines, one training epoch and evaluation (glue: uses ``common``)."""
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision import transforms as T

from common import dist
from common.data import DATASET_STATS, CachedDataset, build_dataset, build_loader
from common.log import AverageMeter, Throughput, progress, update_progress
from common.schedule import cosine_lr, set_lr

# The official repo's CIFAR normalisation (card "Default hyperparameters").
CIFAR_STATS = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))


class Cutout:
    """Zero a ``length x length`` square (clipped at the border) at a uniform random centre; applied to the
    normalised tensor, as in the official CIFAR pipeline."""

    def __init__(self, length):
        self.length = length

    def __call__(self, img):
        h, w = img.shape[-2:]
        cy, cx = int(torch.randint(h, ())), int(torch.randint(w, ()))
        y0, y1 = max(cy - self.length // 2, 0), min(cy + self.length // 2, h)
        x0, x1 = max(cx - self.length // 2, 0), min(cx + self.length // 2, w)
        img = img.clone()
        img[..., y0:y1, x0:x1] = 0
        return img


def build_transforms(cfg):
    """CIFAR-style (random crop with padding + flip [+ Cutout]) for small images, ImageNet-style (RRC + flip
    + colour jitter, resize/centre-crop for eval) for ``imagefolder``/``imagenet``."""
    name, size = cfg.data.name, cfg.image_size
    mean, std = CIFAR_STATS if name in ('cifar10', 'cifar100') else DATASET_STATS.get(name, DATASET_STATS['imagenet'])
    norm = [T.ToTensor(), T.Normalize(mean, std)]
    if name in ('imagefolder', 'imagenet'):
        train = [T.RandomResizedCrop(size), T.RandomHorizontalFlip()]
        if cfg.color_jitter > 0:
            train.append(T.ColorJitter(cfg.color_jitter, cfg.color_jitter, cfg.color_jitter))
        test = [T.Resize(int(round(size / 0.875))), T.CenterCrop(size)]
    else:
        train = [T.RandomCrop(size, padding=size // 8), T.RandomHorizontalFlip()]
        test = [T.Resize(size), T.CenterCrop(size)] if name not in ('synthetic', 'cifar10', 'cifar100') else []
    train += norm
    if cfg.cutout_length > 0:
        train.append(Cutout(cfg.cutout_length))
    if cfg.reprob > 0:
        train.append(T.RandomErasing(p=cfg.reprob, value='random'))
    return T.Compose(train), T.Compose(test + norm)


def build_data(cfg):
    """Train loader, test loader (sharded over ranks, no drop) and the number of classes."""
    d = cfg.data
    train_tf, test_tf = build_transforms(cfg)
    if d.name == 'synthetic':
        opts = dict(num_classes=d.num_classes, image_size=d.image_size, train_size=d.train_size,
                    test_size=d.test_size)
        train_set = CachedDataset(build_dataset('synthetic', split='train', **opts), train_tf)
        test_set = CachedDataset(build_dataset('synthetic', split='test', **opts), test_tf)
    else:
        train_set = build_dataset(d.name, d.root, 'train', train_tf)
        test_set = build_dataset(d.name, d.root, 'val' if d.name in ('imagefolder', 'imagenet') else 'test',
                                 test_tf)
    train_loader = build_loader(train_set, cfg.batch_size, shuffle=True, drop_last=True,
                                num_workers=d.num_workers, seed=cfg.seed)
    test_loader = build_loader(test_set, cfg.eval_batch_size, shuffle=False, drop_last=False,
                               num_workers=d.num_workers, seed=cfg.seed)
    return train_loader, test_loader, len(train_set.classes)


def train_one_epoch(cfg, epoch, model, loader, optimizer, criterion, device, dyrep=None, scaler=None):
    """One epoch in the card's order: zero grads, forward, loss, backward, (clip), ``dyrep.record_metrics()``
    (on unscaled gradients), ``optimizer.step()``, per-iteration cosine lr."""
    model.train()
    loss_m, tput = AverageMeter('loss'), Throughput()
    steps = len(loader)
    total_steps = cfg.epochs * steps
    bar = progress(loader, total=steps, desc=f'epoch {epoch}')
    t0 = time.perf_counter()
    for i, (x, y) in enumerate(bar):
        step = epoch * steps + i
        lr = set_lr(optimizer, cosine_lr(step, total_steps, cfg.lr, cfg.warmup_epochs * steps, cfg.min_lr,
                                         cfg.warmup_lr))
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, enabled=scaler is not None):
            loss = criterion(model(x), y)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
        else:
            loss.backward()
        if cfg.clip_grad_norm > 0:
            nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad_norm)
        if dyrep is not None:
            dyrep.record_metrics()
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        loss_m.update(loss.item(), x.size(0))
        tput.update(x.size(0))
        update_progress(bar, loss=loss_m.avg, lr=lr, img_s=tput.rate)
    return {'train_loss': loss_m.avg, 'lr': lr, 'epoch_time': time.perf_counter() - t0}


@torch.no_grad()
def evaluate(model, loader, device, return_logits=False):
    """Top-1 accuracy (%) and mean loss over the whole (rank-sharded) test set; optionally the logits."""
    model.eval()
    stats = torch.zeros(3, dtype=torch.float64)
    logits = []
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        out = model(x)
        stats += torch.tensor([(out.argmax(1) == y).sum().item(), F.cross_entropy(out, y, reduction='sum').item(),
                               y.numel()], dtype=torch.float64)
        if return_logits:
            logits.append(out.float().cpu())
    stats = dist.all_reduce_sum(stats)
    result = {'top1': 100.0 * stats[0].item() / stats[2].item(), 'test_loss': stats[1].item() / stats[2].item()}
    if return_logits:
        return result, torch.cat(logits)
    return result
