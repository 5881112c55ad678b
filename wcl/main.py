"""WCL pre-training: ``python main.py --cfg cfg.yaml [--opts key=value ...]``.

Trains the backbone with NT-Xent (head1) plus the swapped supervised contrastive loss on 1-NN-graph weak labels
(head2) under LARS, monitors weighted-kNN top-1, and optionally runs the linear probe and the semi-supervised
fine-tuning. Ends by printing the kNN top-1 of the trained encoder next to the encoder at initialisation.
"""
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

from common.config import ConfigError, parse_cli
from common.data import DATASET_STATS, MultiView, build_dataset, build_loader, num_classes, set_epoch
from common.dist import unwrap, wrap_ddp
from common.errors import guard
from common.log import AverageMeter, Throughput, progress, update_progress
from common.runner import setup_run

import augment
import eval as wcl_eval
from lars import LARS, param_groups
from models import WCL, backbone_dict
from schedule import adjust_learning_rate, base_lr_for_batch

DEFAULTS = {
    'output_dir': 'output/wcl', 'seed': 0, 'device': 'auto', 'resume': True, 'amp': False,
    'data': {'name': 'synthetic', 'root': None, 'image_size': 32, 'num_classes': 10, 'train_size': 2000,
             'test_size': 500, 'background': 'texture',  # synthetic only: texture or plain
             'num_workers': 0, 'train_split': 'train', 'test_split': 'test'},
    'backbone': 'resnet18', 'small_input': True, 'width': 64, 'sync_bn': True,
    'dim_hidden': 4096, 'dim': 256, 't': 0.1,
    'batch_size': 256,                  # global, split over processes
    'epochs': 100, 'base_lr_per_sqrt_batch': 0.075, 'momentum': 0.9, 'weight_decay': 1e-6, 'trust_coef': 0.001,
    'warm_up': 10, 'aug_warmup': True, 'crop_min_scale': 0.08, 'graph_detach_keys': True,
    'multicrop': {'enabled': False, 'n_small': 6, 'size': 96, 'scale': [0.05, 0.14], 'knn_k': 5},
    'eval': {
        'knn': {'k': 200, 't': 0.1, 'every': 1},
        'linear': {'enabled': False, 'epochs': 80, 'batch_size': 256, 'lr': 0.0, 'nesterov': True},
        'finetune': {'enabled': False, 'num_per_class': 0, 'file_list': '', 'epochs': 30, 'batch_size': 256,
                     'lr': 0.05},
    },
}


def validate(cfg, world_size):
    if cfg.backbone not in backbone_dict:
        raise ConfigError(f"backbone '{cfg.backbone}' is not one of {', '.join(backbone_dict)}")
    if cfg.batch_size % world_size:
        raise ConfigError(f'batch_size {cfg.batch_size} is not divisible by the {world_size} processes')
    if cfg.batch_size // world_size < 2:
        raise ConfigError('batch_size must give each process at least 2 images (the 1-NN graph needs pairs)')
    if not 0 <= cfg.warm_up < cfg.epochs:
        raise ConfigError(f'warm_up must be in [0, epochs), got {cfg.warm_up} with epochs={cfg.epochs}')
    if not 0 < cfg.crop_min_scale <= 1:
        raise ConfigError(f'crop_min_scale must be in (0, 1], got {cfg.crop_min_scale}')
    if cfg.t <= 0:
        raise ConfigError(f't must be positive, got {cfg.t}')
    if cfg.multicrop.enabled and cfg.multicrop.knn_k < 1:
        raise ConfigError('multicrop.knn_k must be at least 1')


def build_data(cfg):
    d = cfg.data
    stats = DATASET_STATS.get(d.name, DATASET_STATS['imagenet'])
    opts = ({'image_size': d.image_size, 'num_classes': d.num_classes, 'train_size': d.train_size,
             'test_size': d.test_size, 'background': d.background} if d.name == 'synthetic' else {})

    def views(kind):
        aug = augment.get_augment(kind, d.image_size, stats, cfg.crop_min_scale)
        if cfg.multicrop.enabled:
            mc = cfg.multicrop
            return augment.MultiCrop(aug, mc.n_small, mc.size, mc.scale, stats)
        return MultiView([aug, aug])

    pretrain = {k: build_dataset(d.name, d.root, d.train_split, views(k), **opts) for k in ('moco', 'simclr')}
    eval_tf = augment.eval_aug(d.image_size, stats, resize=0 if d.image_size < 128 else None)
    bank = build_dataset(d.name, d.root, 'train' if d.train_split == 'train+unlabeled' else d.train_split,
                         eval_tf, **opts)
    test = build_dataset(d.name, d.root, d.test_split, eval_tf, **opts)
    linear_train = build_dataset(d.name, d.root, 'train' if d.train_split == 'train+unlabeled' else d.train_split,
                                 augment.get_augment('linear', d.image_size, stats), **opts)
    classes = num_classes(d.name, **opts) if d.name != 'imagefolder' else len(bank.classes)
    return pretrain, bank, test, linear_train, classes


def main(argv=None):
    cfg = parse_cli(DEFAULTS, argv, description='WCL pre-training')
    validate(cfg, int(os.environ.get('WORLD_SIZE', 1)))
    run = setup_run(cfg)
    device = run.device
    pretrain, bank, test, linear_train, classes = build_data(cfg)
    local_bs = cfg.batch_size // run.world_size
    loaders = {k: build_loader(ds, local_bs, shuffle=True, drop_last=True, num_workers=cfg.data.num_workers,
                               seed=cfg.seed) for k, ds in pretrain.items()}

    model = WCL(cfg.backbone, cfg.dim_hidden, cfg.dim, graph_detach_keys=cfg.graph_detach_keys,
                small_input=cfg.small_input, width=cfg.width).to(device)
    if cfg.sync_bn and run.world_size > 1 and device.type == 'cuda':
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    base_lr = base_lr_for_batch(cfg.batch_size, cfg.base_lr_per_sqrt_batch)
    optimizer = LARS(torch.optim.SGD(param_groups(model, cfg.weight_decay), lr=base_lr, momentum=cfg.momentum),
                     eps=0.0, trust_coef=cfg.trust_coef)
    scaler = torch.amp.GradScaler('cuda', enabled=run.amp)
    state = run.resume(model=model, optimizer=optimizer.optim, scaler=scaler)
    ddp = wrap_ddp(model, device)
    kc = cfg.eval.knn

    def knn():
        return wcl_eval.knn_monitor(unwrap(model).net, bank, test, classes, device, kc.k, kc.t)

    knn_init = state['knn_init'] if state else knn()
    if not state:
        run.log(f'kNN top-1 of the encoder at initialisation: {knn_init:.2f}%')
        run.log_metrics({'epoch': -1, 'knn_top1': knn_init})
    best = state.get('best_knn', 0.0) if state else 0.0
    knn_top1 = state.get('knn_top1', knn_init) if state else knn_init
    run.log(f'{cfg.backbone} width {cfg.width}, {sum(p.numel() for p in model.parameters()):,} params, '
            f'global batch {cfg.batch_size}, base lr {base_lr:.4f}')

    for epoch in range(run.start_epoch, cfg.epochs):
        kind = 'moco' if cfg.aug_warmup and epoch < cfg.warm_up else 'simclr'
        loader = loaders[kind]
        set_epoch(loader, epoch)
        model.train()
        meters = {k: AverageMeter(k) for k in ('loss', 'nce', 'graph', 'inst_top1')}
        speed = Throughput()
        bar = progress(loader, total=len(loader), desc=f'epoch {epoch}')
        for i, (views, _) in enumerate(bar):
            lr = adjust_learning_rate(optimizer, epoch, base_lr, i, len(loader), cfg.epochs, cfg.warm_up)
            views = [v.to(device, non_blocking=True) for v in views]
            with torch.autocast(device.type, enabled=run.amp):
                logits, labels, graph_loss = ddp(views[0], views[1], cfg.t, small=views[2:] or None,
                                                 knn_k=cfg.multicrop.knn_k)
                nce = F.cross_entropy(logits.float(), labels)
                loss = nce + graph_loss.float()
            optimizer.zero_grad()
            scaler.scale(loss).backward()
            if run.amp:
                scaler.unscale_(optimizer.optim)
            optimizer.step() if not run.amp else _amp_step(scaler, optimizer)
            if run.amp:
                scaler.update()
            n = views[0].shape[0]
            meters['loss'].update(loss.item(), n)
            meters['nce'].update(nce.item(), n)
            meters['graph'].update(graph_loss.item(), n)
            meters['inst_top1'].update((logits.argmax(1) == labels).float().mean().item() * 100, n)
            speed.update(n * run.world_size)
            update_progress(bar, loss=meters['loss'].avg, lr=lr, img_s=speed.rate)
        metrics = {'epoch': epoch, 'aug': kind, 'lr': lr, **{k: m.avg for k, m in meters.items()},
                   'img_per_s': speed.rate}
        if (kc.every and (epoch + 1) % kc.every == 0) or epoch + 1 == cfg.epochs:
            knn_top1 = knn()
            metrics['knn_top1'] = knn_top1
        is_best = knn_top1 > best
        best = max(best, knn_top1)
        run.log_metrics(metrics)
        run.save({'model': unwrap(model).state_dict(), 'optimizer': optimizer.state_dict(),
                  'scaler': scaler.state_dict(), 'epoch': epoch + 1, 'knn_init': knn_init, 'knn_top1': knn_top1,
                  'best_knn': best}, is_best=is_best)

    result = {'knn_init': knn_init, 'knn_top1': knn_top1}
    net = unwrap(model).net
    if cfg.eval.linear.enabled:
        lc = cfg.eval.linear
        result['linear_top1'] = wcl_eval.linear_probe(net, linear_train, test, classes, device, lc.epochs,
                                                      lc.batch_size, lc.lr or None, nesterov=lc.nesterov,
                                                      log=run.log)
        run.log_metrics({'epoch': cfg.epochs, 'linear_top1': result['linear_top1']})
    if cfg.eval.finetune.enabled:
        fc = cfg.eval.finetune
        if not fc.num_per_class and not fc.file_list:
            raise ConfigError('eval.finetune needs num_per_class > 0 or a file_list of labeled images')
        result['finetune_top1'] = wcl_eval.finetune(net, linear_train, test, classes, device,
                                                    fc.num_per_class or None, fc.file_list or None, cfg.seed,
                                                    fc.epochs, fc.batch_size, fc.lr, log=run.log)
        run.log_metrics({'epoch': cfg.epochs, 'finetune_top1': result['finetune_top1']})
    extra = ''.join(f', {k} {v:.2f}%' for k, v in result.items() if k not in ('knn_init', 'knn_top1'))
    run.finish(f'kNN top-1 ({cfg.data.name} {cfg.data.test_split}): trained {knn_top1:.2f}% '
               f'vs. initialisation {knn_init:.2f}%{extra}')
    return result


def _amp_step(scaler, optimizer):
    """With AMP: skip the LARS step when the unscaled gradients are not finite (as GradScaler.step would)."""
    grads = [p.grad for g in optimizer.param_groups for p in g['params'] if p.grad is not None]
    if all(torch.isfinite(g).all() for g in grads):
        optimizer.step()


if __name__ == '__main__':
    guard(main)
