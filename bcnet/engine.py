"""Training glue of ``main.py``: data pipelines, optimizer groups, one epoch of supernet / plain training."""
import os

import torch
import torchvision.transforms as T

from common.data import DATASET_STATS, CachedDataset, build_dataset, build_loader
from common.log import AverageMeter, Throughput, progress, update_progress
from common.schedule import cosine_lr, set_lr

AUGMENTS = ('cifar', 'imagenet', 'none')
FOLDER = os.path.dirname(os.path.abspath(__file__))


def resolve_path(path):
    """A configured data path: absolute as is, relative to this folder; ``SHARED_DATA_DIR`` (when set) is
    tried for a missing ``shared/data`` file."""
    if os.path.isabs(path):
        return path
    full = os.path.normpath(os.path.join(FOLDER, path))
    env = os.environ.get('SHARED_DATA_DIR')
    if not os.path.exists(full) and env:
        alt = os.path.join(env, os.path.basename(path))
        if os.path.exists(alt):
            return alt
    return full


def transforms(name, size, augment, train):
    """``cifar``: RandomCrop(size, padding=size/8, i.e. 4 at 32x32) + flip; ``imagenet``: RandomResizedCrop +
    flip (test: resize to size/0.875 and centre crop); ``none``: tensors only. Normalised with the dataset's
    mean/std."""
    stats = DATASET_STATS.get(name, DATASET_STATS['cifar10'])
    norm = [T.ToTensor(), T.Normalize(*stats)]
    if augment == 'imagenet':
        if train:
            return T.Compose([T.RandomResizedCrop(size), T.RandomHorizontalFlip(), *norm])
        return T.Compose([T.Resize(int(round(size / 0.875))), T.CenterCrop(size), *norm])
    if augment == 'cifar' and train:
        return T.Compose([T.RandomCrop(size, padding=max(1, size // 8)), T.RandomHorizontalFlip(), *norm])
    return T.Compose(norm)


_CACHE = {}


def _dataset(d, split, train):
    tf = transforms(d.name, d.image_size, d.augment, train)
    if d.name != 'synthetic':
        return build_dataset(d.name, d.root, split, tf)
    key = (split, d.num_classes, d.image_size, d.train_size, d.test_size)
    if key not in _CACHE:   # rendered once per process, shared by the loaders of every stage
        _CACHE[key] = (build_dataset('synthetic', None, split, None, num_classes=d.num_classes,
                                     image_size=d.image_size, train_size=d.train_size, test_size=d.test_size), {})
    return CachedDataset(*_CACHE[key][:1], tf, cache=_CACHE[key][1])


def build_data(cfg, batch_size, seed):
    """(train loader, recalibration loader, test loader) for ``cfg.data``."""
    d = cfg.data
    train, test = _dataset(d, 'train', True), _dataset(d, 'test', False)
    train_loader = build_loader(train, batch_size, shuffle=True, drop_last=True, num_workers=d.num_workers,
                                seed=seed)
    recal_loader = build_loader(train, batch_size, shuffle=True, drop_last=True, num_workers=d.num_workers,
                                seed=seed + 1)
    test_loader = build_loader(test, batch_size, shuffle=False, drop_last=False, num_workers=d.num_workers,
                               seed=seed)
    return train_loader, recal_loader, test_loader


def param_groups(model, weight_decay):
    """Weight decay on conv/linear weights only (not on BN parameters or biases), as the official configs."""
    decay, no_decay = [], []
    for p in model.parameters():
        (decay if p.ndim > 1 else no_decay).append(p)
    return [{'params': decay, 'weight_decay': weight_decay}, {'params': no_decay, 'weight_decay': 0.0}]


def build_optimizer(model, t):
    return torch.optim.SGD(param_groups(model, t.weight_decay), lr=t.lr, momentum=t.momentum,
                           nesterov=t.nesterov and t.momentum > 0)


def lr_at(t, step, steps_per_epoch):
    return cosine_lr(step, t.epochs * steps_per_epoch, t.lr, warmup_steps=t.warmup_epochs * steps_per_epoch,
                     min_lr=t.min_lr, warmup_start_lr=t.warmup_lr)


def train_epoch(model, trainer, optimizer, loader, epoch, t, device, scaler=None, desc='supernet'):
    """One epoch of ``trainer.forward`` steps with a per-iteration cosine LR. Returns (mean loss, last lr)."""
    model.train()
    steps = len(loader) if t.max_iters_per_epoch <= 0 else min(len(loader), t.max_iters_per_epoch)
    meter, speed = AverageMeter('loss'), Throughput()
    bar = progress(loader, total=steps, desc=f'{desc} {epoch}')
    lr = t.lr
    for i, (x, y) in enumerate(bar):
        if i >= steps:
            break
        lr = set_lr(optimizer, lr_at(t, epoch * steps + i, steps))
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        _, loss = trainer.forward(model, x, y)
        if not torch.isfinite(loss):
            raise FloatingPointError(f'non-finite loss at epoch {epoch} iteration {i}')
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        meter.update(loss.item(), x.size(0))
        speed.update(x.size(0))
        update_progress(bar, loss=meter.avg, lr=lr, img_s=speed.rate)
    return meter.avg, lr
