"""LEWEL pre-training (and evaluation): ``python main.py --cfg cfg.yaml [--opts key=value ...]``.

``mode: pretrain`` (default) trains LEWEL_B (``arch: LEWELB_EMAN`` or ``LEWELB``) or the reconstructed LEWEL_M
(``arch: LEWELM``) with the official step order (online passes on both views, target passes under no-grad, loss,
LARS step, EMA update), monitors the online backbone with the kNN protocol, and ends by printing the kNN top-1 of
the trained encoder next to that of the same encoder at initialisation.  ``mode: knn | linear | semi`` runs the
evaluation protocols of ``eval/`` on ``<output_dir>/last.pth`` (or ``eval.checkpoint``).
Multi-GPU / multi-process: ``torchrun --nproc_per_node=N main.py --cfg ...`` (gloo on CPU, nccl on CUDA).
"""
import math
import time
from functools import partial

import torch

from common.config import parse_cli
from common.data import DATASET_STATS, CachedDataset, build_dataset, build_loader, set_epoch
from common.dist import unwrap, wrap_ddp
from common.errors import ConfigError, guard
from common.log import AverageMeter, Throughput, progress, update_progress
from common.runner import setup_run

import backbones
import data
import models
import optim

ARCHS = ('LEWELB_EMAN', 'LEWELB', 'LEWELM')
MODES = ('pretrain', 'knn', 'linear', 'semi')

# The schema: every valid key with its default (the official LEWEL_B EMAN 100-epoch run on 8 GPUs; cfg.yaml is
# the small CPU default, configs/*.yaml hold the published settings).
DEFAULTS = {
    'output_dir': 'output/lewel',
    'seed': 0,
    'device': 'auto',
    'resume': True,
    'amp': False,                  # mixed precision (CUDA only; the official runs use it)
    'mode': 'pretrain',            # pretrain | knn | linear | semi
    'arch': 'LEWELB_EMAN',         # LEWELB_EMAN (EMAN target, plain BN) | LEWELB (SyncBN) | LEWELM (reconstructed)
    'data': {
        'name': 'imagefolder',     # loader of common.data: synthetic, imagefolder (ImageNet), cifar10, ...
        'root': None,
        'image_size': 224,         # training crop size (and the size of the synthetic images)
        'num_classes': 10,         # synthetic only
        'train_size': 5000,        # synthetic only
        'test_size': 1000,         # synthetic only
        'background': 'texture',   # synthetic only: texture | plain | gray
        'num_workers': 8,
        'train_split': 'train',
        'cache': False,            # keep decoded/rendered images in memory (small datasets: synthetic)
    },
    'aug': {
        'recipe': None,            # byol | mocov2; None: byol for LEWEL_B, mocov2 for LEWEL_M
        'crop_scale': [0.2, 1.0],
        'blur_sigma': [0.1, 2.0],  # PIL radius range (for 224 px)
        'eval_resize': None,       # Resize before CenterCrop(image_size) for evaluation (ImageNet: 256); null: none
    },
    'backbone': 'resnet50_encoder',
    'width': 64,                   # first-stage channels (64 in every published model; CPU default only)
    'small_input': False,          # 3x3 stride-1 stem without max-pool (CPU default only)
    'norm': 'none',                # none (per-process BN) | syncbn
    'proj_dim': 256,
    'hid_dim': 4096,
    'num_neck_mlp': 2,
    'enc_m': 0.98,                 # m_0 of the EMA (LEWEL_M: the constant m)
    'lewel': {'l2_norm': True, 'scale': 1.0, 'num_heads': 4, 'loss_weight': 0.5},
    'moco': {                      # LEWEL_M only (reconstruction, see README)
        'queue_size': 65536, 'T': 0.2, 'aligned_negatives': 'batch', 'obj_queue_size': 4096, 'symmetric': True,
    },
    'optimizer': 'lars',           # lars (LEWEL_B) | sgd (LEWEL_M)
    'batch_size': 128,             # per process (official: 1024 total on 8 GPUs)
    'epochs': 100,
    'lr': 3.6,                     # for the global batch (not rescaled)
    'warmup_epochs': 10,
    'cos': True,                   # cosine per epoch after warm-up; False: x0.1 at `schedule`
    'schedule': [120, 160],
    'momentum': 0.9,
    'weight_decay': 1.0e-6,
    'eta': 0.001,                  # LARS trust coefficient
    'exclude_bias_and_bn': True,
    'print_freq': 50,
    'save_freq': 1,                # epochs between writes of last.pth (the last epoch is always written)
    'eval': {
        'checkpoint': None,        # evaluation modes: checkpoint to read (default <output_dir>/last.pth)
        'knn': {'k': 20, 'vote': 'majority', 't': 0.1, 'every': 5, 'at_init': True, 'batch_size': 256,
                'memory_split': 'val', 'memory_percent': 0.1, 'query_split': 'val', 'query_percent': 0.5},
        'linear': {'epochs': 50, 'batch_size': 256, 'lr': 0.4, 'momentum': 0.9, 'weight_decay': 0.0,
                   'milestones': [30, 40], 'gamma': 0.1, 'split': 'train', 'test_split': 'val'},
        'semi': {'percent': 1.0, 'file_list': None, 'epochs': 50, 'batch_size': 256, 'lr_backbone': 1.0e-4,
                 'lr_classifier': 1.0, 'momentum': 0.9, 'weight_decay': 1.0e-4, 'milestones': [30, 40],
                 'gamma': 0.1, 'split': 'train', 'test_split': 'val'},
    },
}


def _err(key, msg, value):
    raise ConfigError(f"config key '{key}' {msg}, got {value!r}")


def validate(cfg, world_size=1):
    """Range checks that the schema's type checks cannot express; each error names its key."""
    if cfg.mode not in MODES:
        _err('mode', f"must be one of {', '.join(MODES)}", cfg.mode)
    if cfg.arch not in ARCHS:
        _err('arch', f"must be one of {', '.join(ARCHS)}", cfg.arch)
    if cfg.backbone not in backbones.backbone_dict:
        _err('backbone', f"must be one of {', '.join(backbones.backbone_dict)}", cfg.backbone)
    if cfg.norm not in ('none', 'syncbn'):
        _err('norm', 'must be none or syncbn', cfg.norm)
    if cfg.optimizer not in ('lars', 'sgd'):
        _err('optimizer', 'must be lars or sgd', cfg.optimizer)
    if cfg.aug.recipe not in (None, 'byol', 'mocov2'):
        _err('aug.recipe', 'must be null, byol or mocov2', cfg.aug.recipe)
    for key in ('batch_size', 'epochs', 'proj_dim', 'hid_dim', 'width', 'data.image_size', 'lewel.num_heads',
                'lewel.scale', 'print_freq', 'save_freq', 'eval.knn.k', 'eval.knn.t', 'eval.knn.batch_size',
                'eval.linear.batch_size', 'eval.semi.batch_size', 'moco.queue_size', 'moco.T'):
        value = cfg
        for part in key.split('.'):
            value = value[part]
        if not value > 0:
            _err(key, 'must be > 0', value)
    if cfg.num_neck_mlp < 2:
        _err('num_neck_mlp', 'must be >= 2 (Conv1d layers of the neck MLPs)', cfg.num_neck_mlp)
    if not cfg.lewel.l2_norm:
        _err('lewel.l2_norm', 'must be true (the official neck asserts it)', cfg.lewel.l2_norm)
    if not 0.0 <= cfg.lewel.loss_weight <= 1.0:
        _err('lewel.loss_weight', 'must be in [0, 1]', cfg.lewel.loss_weight)
    if cfg.proj_dim % cfg.lewel.num_heads:
        _err('lewel.num_heads', f'must divide proj_dim={cfg.proj_dim}', cfg.lewel.num_heads)
    channels = cfg.width * 8 * (4 if cfg.backbone == 'resnet50_encoder' else 1)
    if channels % cfg.lewel.num_heads:
        _err('lewel.num_heads', f'must divide the backbone channels ({channels})', cfg.lewel.num_heads)
    if not 0.0 <= cfg.enc_m <= 1.0:
        _err('enc_m', 'must be in [0, 1]', cfg.enc_m)
    if cfg.lr < 0 or cfg.weight_decay < 0 or cfg.momentum < 0 or cfg.eta < 0:
        raise ConfigError('config keys lr, weight_decay, momentum and eta must be >= 0')
    if not 0 <= cfg.warmup_epochs <= cfg.epochs:
        _err('warmup_epochs', f'must be in [0, epochs={cfg.epochs}]', cfg.warmup_epochs)
    if len(cfg.aug.crop_scale) != 2 or not 0 < cfg.aug.crop_scale[0] <= cfg.aug.crop_scale[1] <= 1:
        _err('aug.crop_scale', 'must be [min, max] with 0 < min <= max <= 1', cfg.aug.crop_scale)
    if len(cfg.aug.blur_sigma) != 2 or not 0 < cfg.aug.blur_sigma[0] <= cfg.aug.blur_sigma[1]:
        _err('aug.blur_sigma', 'must be [min, max] with 0 < min <= max', cfg.aug.blur_sigma)
    if cfg.eval.knn.vote not in ('majority', 'weighted'):
        _err('eval.knn.vote', 'must be majority or weighted', cfg.eval.knn.vote)
    for key in ('memory_percent', 'query_percent'):
        if not 0.0 < cfg.eval.knn[key] <= 1.0:
            _err(f'eval.knn.{key}', 'must be in (0, 1]', cfg.eval.knn[key])
    if not 0.0 < cfg.eval.semi.percent <= 100.0:
        _err('eval.semi.percent', 'must be in (0, 100]', cfg.eval.semi.percent)
    if cfg.eval.knn.every < 0 or cfg.eval.linear.epochs < 0 or cfg.eval.semi.epochs < 0 or cfg.data.num_workers < 0:
        raise ConfigError('config keys eval.knn.every, eval.linear.epochs, eval.semi.epochs and data.num_workers '
                          'must be >= 0')
    if cfg.arch == 'LEWELM':
        if cfg.moco.aligned_negatives not in ('batch', 'queue'):
            _err('moco.aligned_negatives', 'must be batch or queue', cfg.moco.aligned_negatives)
        global_batch = cfg.batch_size * world_size
        if cfg.moco.queue_size % global_batch:
            _err('moco.queue_size', f'must be a multiple of the global batch size {global_batch} (batch_size '
                 f'{cfg.batch_size} x {world_size} processes)', cfg.moco.queue_size)
        if cfg.moco.aligned_negatives == 'queue' and cfg.moco.obj_queue_size % global_batch:
            _err('moco.obj_queue_size', f'must be a multiple of the global batch size {global_batch}',
                 cfg.moco.obj_queue_size)


# ---------------------------------------------------------------------------------------------- building
def norm_stats(cfg):
    """(mean, std) for the dataset (ImageNet statistics for image folders)."""
    return DATASET_STATS.get(cfg.data.name, (data.IMAGENET_MEAN, data.IMAGENET_STD))


def train_transform(cfg):
    mean, std = norm_stats(cfg)
    kw = dict(size=cfg.data.image_size, mean=mean, std=std, crop_scale=cfg.aug.crop_scale,
              blur_sigma=cfg.aug.blur_sigma)
    recipe = cfg.aug.recipe or ('mocov2' if cfg.arch == 'LEWELM' else 'byol')
    if recipe == 'byol':
        return data.TwoCropsTransform(*data.get_byol_tranforms(**kw))
    return data.TwoCropsTransform(data.moco_v2_transform(**kw))


def eval_transform(cfg):
    mean, std = norm_stats(cfg)
    return data.eval_transform(cfg.data.image_size, mean, std, resize=cfg.aug.eval_resize)


def make_dataset(cfg, split, transform):
    options = {}
    if cfg.data.name in ('synthetic', 'synthetic_det'):
        options = dict(num_classes=cfg.data.num_classes, image_size=cfg.data.image_size,
                       train_size=cfg.data.train_size, test_size=cfg.data.test_size, seed=cfg.seed,
                       background=cfg.data.background)
    if cfg.data.cache:
        return CachedDataset(build_dataset(cfg.data.name, cfg.data.root, split=split, **options), transform)
    return build_dataset(cfg.data.name, cfg.data.root, split=split, transform=transform, **options)


def base_encoder(cfg):
    """The backbone constructor ``f(norm_layer=..., with_avgpool=...)`` the LEWEL models expect."""
    fn = backbones.backbone_dict[cfg.backbone]
    if cfg.width == 64 and not cfg.small_input:
        return fn
    return partial(fn, width=cfg.width, small_input=cfg.small_input)


def build_model(cfg):
    lw = cfg.lewel
    common_kw = dict(dim=cfg.proj_dim, m=cfg.enc_m, hid_dim=cfg.hid_dim, num_neck_mlp=cfg.num_neck_mlp,
                     scale=lw.scale, l2_norm=lw.l2_norm, num_heads=lw.num_heads, loss_weight=lw.loss_weight)
    cls = models.get_lewel_model(cfg.arch)
    if cfg.arch == 'LEWELM':
        mc = cfg.moco
        model = cls(base_encoder(cfg), queue_size=mc.queue_size, T=mc.T, aligned_negatives=mc.aligned_negatives,
                    obj_queue_size=mc.obj_queue_size, symmetric=mc.symmetric, **common_kw)
    else:
        model = cls(base_encoder(cfg), **common_kw)
    return model


def build_optimizer(cfg, model):
    params = optim.collect_params(model, exclude_bias_and_bn=cfg.exclude_bias_and_bn,
                                  sync_bn='EMAN' in cfg.arch)
    if cfg.optimizer == 'lars':
        return optim.LARS(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, eta=cfg.eta)
    for group in params:   # SGD (LEWEL_M): weight decay on every parameter, as MoCo v2
        group.pop('lars_exclude', None)
        group.pop('weight_decay', None)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


# ---------------------------------------------------------------------------------------------- training
def set_train_mode(model):
    """``model.train()``; the EMAN target then goes back to eval mode (it uses its EMA running statistics)."""
    model.train()
    net = unwrap(model)
    if net.target_eval:
        net.target_net.eval()


def train_one_epoch(model, loader, optimizer, epoch, cfg, run, scaler=None):
    """One epoch in the official order: forward (online x2, target x2), loss, backward, step, EMA update."""
    set_train_mode(model)
    net = unwrap(model)
    meters = AverageMeter('loss')
    speed = Throughput()
    iters = len(loader)
    max_iter = iters * cfg.epochs
    bar = progress(loader, total=iters, desc=f'epoch {epoch}')
    lr = optim.learning_rate(cfg.lr, epoch, 0, iters, cfg.epochs, cfg.warmup_epochs, cfg.cos, cfg.schedule)
    for i, (views, _) in enumerate(bar):
        cur_iter = epoch * iters + i
        lr = optim.learning_rate(cfg.lr, epoch, i, iters, cfg.epochs, cfg.warmup_epochs, cfg.cos, cfg.schedule)
        for group in optimizer.param_groups:
            group['lr'] = lr
        im_v1, im_v2 = (v.to(run.device, non_blocking=True) for v in views)
        with torch.autocast(run.device.type, enabled=run.amp):
            loss = model(im_v1, im_v2)
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f'loss is {loss.item()} at epoch {epoch}, iteration {i}')
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        m = net.momentum_update(cur_iter, max_iter)
        n = im_v1.shape[0]
        meters.update(loss.item(), n)
        speed.update(n * run.world_size)
        update_progress(bar, loss=meters.avg, lr=lr, m=m, img_s=round(speed.rate))
        if (i % cfg.print_freq == 0 or i == iters - 1) and not hasattr(bar, 'set_postfix'):
            run.log(f'epoch {epoch} [{i + 1}/{iters}] loss {meters.avg:.4f} lr {lr:.5f} m {m:.5f} '
                    f'{speed.rate:.0f} img/s')
    return {'loss': meters.avg, 'lr': lr, 'm': net.curr_m, 'img_per_s': speed.rate}


def pretrain(cfg, run):
    from eval import knn as knn_eval

    train_set = make_dataset(cfg, cfg.data.train_split, train_transform(cfg))
    loader = build_loader(train_set, cfg.batch_size, shuffle=True, drop_last=True,
                          num_workers=cfg.data.num_workers, seed=cfg.seed)
    if len(loader) == 0:
        raise ConfigError(f"config key 'batch_size' ({cfg.batch_size}) exceeds the training set "
                          f"({len(train_set)} images per process)")
    knn_loaders = knn_eval.knn_loaders(cfg)

    model = build_model(cfg).to(run.device)
    if cfg.norm == 'syncbn' and run.world_size > 1:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    optimizer = build_optimizer(cfg, model)
    scaler = torch.amp.GradScaler('cuda') if run.amp else None
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    run.log(f'{cfg.arch} {cfg.backbone} (width {cfg.width}): {n_train:,} trainable parameters, '
            f'{len(loader)} iterations/epoch of {cfg.batch_size}x{run.world_size}')

    state = run.resume(model=model, optimizer=optimizer, scaler=scaler)
    knn_init = state.get('knn_init') if state else None
    if knn_init is None and cfg.eval.knn.at_init and run.start_epoch == 0:
        knn_init = knn_eval.knn_top1(model.online_net.backbone, cfg, run, knn_loaders)
        run.log_metrics({'epoch': 0, 'knn_top1': knn_init, 'stage': 'init'})
    best = state.get('best_knn', 0.0) if state else 0.0
    ddp_model = wrap_ddp(model, run.device)

    knn, stats = None, {}
    for epoch in range(run.start_epoch, cfg.epochs):
        set_epoch(loader, epoch)
        start = time.time()
        stats = train_one_epoch(ddp_model, loader, optimizer, epoch, cfg, run, scaler)
        metrics = {'epoch': epoch + 1, **stats, 'time_s': time.time() - start}
        last = epoch + 1 == cfg.epochs
        is_best = False
        if last or (cfg.eval.knn.every and (epoch + 1) % cfg.eval.knn.every == 0):
            knn = metrics['knn_top1'] = knn_eval.knn_top1(model.online_net.backbone, cfg, run, knn_loaders)
            is_best, best = knn > best, max(knn, best)
        run.log_metrics(metrics)
        if last or (epoch + 1) % cfg.save_freq == 0 or is_best:
            run.save({'model': model.state_dict(), 'optimizer': optimizer.state_dict(), 'epoch': epoch + 1,
                      'arch': cfg.arch, 'knn_init': knn_init, 'knn_top1': knn, 'best_knn': best,
                      **({'scaler': scaler.state_dict()} if scaler is not None else {})}, is_best=is_best)

    if knn is None:  # resumed a finished run: evaluate the final encoder again
        knn = knn_eval.knn_top1(model.online_net.backbone, cfg, run, knn_loaders)
    kc = cfg.eval.knn
    headline = (f'kNN top-1 ({cfg.data.name} {kc.query_split}, {kc.k}-NN {kc.vote}): {knn:.2f}% trained encoder')
    if knn_init is not None:
        headline += f' vs {knn_init:.2f}% at initialisation'
    run.finish(headline)
    return {'knn_top1': knn, 'knn_init': knn_init, **stats}


def main(argv=None):
    cfg = parse_cli(DEFAULTS, argv, description='LEWEL pre-training and evaluation')
    validate(cfg)
    if cfg.mode != 'pretrain':
        from eval import knn, linear, semi
        return {'knn': knn.run_knn, 'linear': linear.run_linear, 'semi': semi.run_semi}[cfg.mode](cfg)
    run = setup_run(cfg)
    validate(cfg, run.world_size)
    return pretrain(cfg, run)


if __name__ == '__main__':
    guard(main)
