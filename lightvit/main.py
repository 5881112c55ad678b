"""LightViT image classification: train / eval / flops / speed.

    python main.py --cfg cfg.yaml                               # the embedded default (synthetic, CPU)
    python main.py --cfg configs/imagenet_lightvit_tiny.yaml --opts data.root=/data/imagenet
    torchrun --nproc_per_node=8 main.py --cfg configs/imagenet_lightvit_tiny.yaml
    python main.py --cfg configs/imagenet_lightvit_tiny.yaml --opts mode=eval model.pretrained=lightvit_tiny_78.7.ckpt
"""
import math
import os
import sys

import torch
from torch.utils.flop_counter import FlopCounterMode

from common.checkpoint import load_checkpoint, load_state_dict
from common.config import parse_cli
from common.data import DATASET_STATS, CachedDataset, build_dataset, build_loader, num_classes, set_epoch
from common.dist import all_reduce_sum, wrap_ddp
from common.errors import ConfigError, guard
from common.log import AverageMeter, Throughput, progress, update_progress
from common.runner import setup_run
from common.schedule import set_lr

import augment
import model as models
from loss import soft_target_cross_entropy
from mixup import Mixup
from optim import build_optimizer
from sched import warmup_cosine
from speed import throughput

MODES = ('train', 'eval', 'flops', 'speed')
ARCHS = ('lightvit_tiny', 'lightvit_small', 'lightvit_base', 'custom')

DEFAULTS = {
    'output_dir': 'output/lightvit',
    'seed': 42,
    'device': 'auto',
    'mode': 'train',                 # train | eval | flops | speed
    'resume': True,
    'data': {'name': 'synthetic', 'root': None, 'image_size': 32, 'num_classes': 10,
             'train_size': 2000, 'test_size': 500, 'num_workers': 0,
             'cache': True},                 # synthetic only: draw each image once, keep it in memory
    'model': {
        'arch': 'lightvit_tiny',     # lightvit_tiny | lightvit_small | lightvit_base | custom
        # the five keys below are read only when arch is custom (the named archs fix them)
        'embed_dims': [64, 128, 256], 'num_layers': [2, 6, 6], 'num_heads': [2, 4, 8],
        'mlp_ratios': [8, 4, 4], 'num_tokens': 8,
        'window_size': 7, 'neck_dim': 1280,
        'drop_rate': 0.0, 'attn_drop_rate': 0.0, 'drop_path_rate': 0.1,
        'pretrained': '',            # an official checkpoint (or one of ours), loaded with strict=True
    },
    'input_size': 224,               # train crop and test crop side
    'batch_size': 128,               # per process
    'epochs': 300,
    'lr': 1e-3,
    'lr_scaling': 'none',            # none (official: lr is absolute) | linear (lr * global_batch / lr_base_batch)
    'lr_base_batch': 1024,
    'warmup_epochs': 20,
    'warmup_lr': 1e-7,
    'min_lr': 1e-6,
    'weight_decay': 0.04,
    'opt_eps': 1e-8,
    'betas': [0.9, 0.999],
    'amp': False,                    # CUDA only (official: B only)
    'channels_last': False,          # CUDA only
    'aug': {'scale': [0.08, 1.0], 'hflip': 0.5, 'aa': 'rand-m9-mstd0.5', 'color_jitter': 0.3,
            'reprob': 0.25, 'remode': 'pixel', 'interpolation': 'bicubic', 'test_crop_ratio': 0.875},
    'mixup': {'mixup': 0.2, 'cutmix': 1.0, 'prob': 1.0, 'switch_prob': 0.5, 'mode': 'batch',
              'smoothing': 0.1},
    'eval_interval': 1,
    'speed': {'batch_size': 1024, 'warmup': 100, 'iters': 1000},
}


# ----------------------------------------------------------------------------------------- config
def _strip_launcher_args(argv):
    """Accept ``--local_rank=N`` / ``--local-rank N`` from old launchers (LOCAL_RANK is read from the env)."""
    out, skip = [], False
    for i, a in enumerate(argv):
        if skip:
            skip = False
            continue
        name = a.split('=', 1)[0]
        if name in ('--local_rank', '--local-rank'):
            if '=' in a:
                os.environ.setdefault('LOCAL_RANK', a.split('=', 1)[1])
            elif i + 1 < len(argv):
                os.environ.setdefault('LOCAL_RANK', argv[i + 1])
                skip = True
            continue
        out.append(a)
    return out


def model_kwargs(cfg):
    m = cfg.model
    kw = dict(models.ARCHS[m.arch]) if m.arch != 'custom' else dict(
        embed_dims=list(m.embed_dims), num_layers=list(m.num_layers), num_heads=list(m.num_heads),
        mlp_ratios=list(m.mlp_ratios), num_tokens=m.num_tokens)
    kw.update(img_size=cfg.input_size, window_size=m.window_size, neck_dim=m.neck_dim, drop_rate=m.drop_rate,
              attn_drop_rate=m.attn_drop_rate, drop_path_rate=m.drop_path_rate)
    return kw


def validate(cfg):
    """Range checks that the schema cannot express; each error names its key."""
    def need(cond, key, msg):
        if not cond:
            raise ConfigError(f"config key '{key}' {msg}")

    need(cfg.mode in MODES, 'mode', f"must be one of {', '.join(MODES)}, got {cfg.mode!r}")
    need(cfg.model.arch in ARCHS, 'model.arch', f"must be one of {', '.join(ARCHS)}, got {cfg.model.arch!r}")
    kw = model_kwargs(cfg)
    stages = len(kw['embed_dims'])
    for k in ('embed_dims', 'num_layers', 'num_heads', 'mlp_ratios'):
        need(len(kw[k]) == stages and stages > 0, f'model.{k}', 'needs one entry per stage (same length as '
             'model.embed_dims)')
        need(all(v > 0 for v in kw[k]), f'model.{k}', f'must be positive, got {kw[k]}')
    for d, h in zip(kw['embed_dims'], kw['num_heads']):
        need(d % h == 0 and d % 2 == 0, 'model.embed_dims', f'must be even and divisible by num_heads ({d} / {h})')
    need(kw['num_tokens'] >= 1, 'model.num_tokens', 'must be >= 1')
    need(cfg.model.window_size >= 1, 'model.window_size', 'must be >= 1')
    need(cfg.model.neck_dim >= 1, 'model.neck_dim', 'must be >= 1')
    for k in ('drop_rate', 'attn_drop_rate', 'drop_path_rate'):
        need(0. <= cfg.model[k] < 1., f'model.{k}', f'must be in [0, 1), got {cfg.model[k]}')
    ws, side = cfg.model.window_size, cfg.input_size
    grid_ok = side % 8 == 0 and all((side // 8) % (2 ** s) == 0 and (side // 8 // 2 ** s) % ws == 0
                                    for s in range(stages))
    need(grid_ok, 'input_size', f'{side} gives token grids that are not multiples of the window size {ws} '
         f'at every stage (side / 8 / 2^stage must be a multiple of {ws}; e.g. {8 * ws * 2 ** (stages - 1)})')
    for k in ('batch_size', 'lr_base_batch', 'eval_interval'):
        need(cfg[k] >= 1, k, f'must be >= 1, got {cfg[k]}')
    for k in ('epochs', 'warmup_epochs'):
        need(cfg[k] >= 0, k, f'must be >= 0, got {cfg[k]}')
    for k in ('lr', 'warmup_lr', 'min_lr', 'weight_decay'):
        need(cfg[k] >= 0, k, f'must be >= 0, got {cfg[k]}')
    need(cfg.lr_scaling in ('none', 'linear'), 'lr_scaling', f"must be none or linear, got {cfg.lr_scaling!r}")
    need(len(cfg.betas) == 2 and all(0 <= b < 1 for b in cfg.betas), 'betas', 'must be two numbers in [0, 1)')
    a = cfg.aug
    need(len(a.scale) == 2 and 0 < a.scale[0] <= a.scale[1] <= 1, 'aug.scale', f'must be [lo, hi] in (0, 1], '
         f'got {a.scale}')
    for k in ('hflip', 'reprob'):
        need(0 <= a[k] <= 1, f'aug.{k}', f'must be a probability, got {a[k]}')
    need(a.remode in ('pixel', 'rand', 'const'), 'aug.remode', f'must be pixel, rand or const, got {a.remode!r}')
    need(a.interpolation in ('bicubic', 'bilinear'), 'aug.interpolation', 'must be bicubic or bilinear')
    need(0 < a.test_crop_ratio <= 1, 'aug.test_crop_ratio', f'must be in (0, 1], got {a.test_crop_ratio}')
    if a.aa:
        try:
            augment.parse_rand_augment(a.aa)
        except ValueError as e:
            raise ConfigError(f"config key 'aug.aa': {e}") from None
    mx = cfg.mixup
    need(mx.mode == 'batch', 'mixup.mode', f"only 'batch' (the official mode) is implemented, got {mx.mode!r}")
    for k in ('prob', 'switch_prob'):
        need(0 <= mx[k] <= 1, f'mixup.{k}', f'must be a probability, got {mx[k]}')
    for k in ('mixup', 'cutmix'):
        need(mx[k] >= 0, f'mixup.{k}', f'must be >= 0, got {mx[k]}')
    need(0 <= mx.smoothing < 1, 'mixup.smoothing', f'must be in [0, 1), got {mx.smoothing}')
    for k in ('batch_size', 'iters'):
        need(cfg.speed[k] >= 1, f'speed.{k}', 'must be >= 1')
    need(cfg.speed.warmup >= 0, 'speed.warmup', 'must be >= 0')


# ----------------------------------------------------------------------------------------- pieces
def data_options(cfg):
    d = cfg.data
    if d.name == 'synthetic':
        return dict(image_size=d.image_size, num_classes=d.num_classes, train_size=d.train_size,
                    test_size=d.test_size)
    return {}


def build_data(cfg, split):
    mean, std = DATASET_STATS.get(cfg.data.name, DATASET_STATS['imagenet'])
    a = cfg.aug
    if split == 'train':
        tf = augment.build_train_transform(cfg.input_size, mean, std, scale=a.scale, hflip=a.hflip, aa=a.aa,
                                           color_jitter=a.color_jitter, reprob=a.reprob, remode=a.remode,
                                           interpolation=a.interpolation)
    else:
        tf = augment.build_test_transform(cfg.input_size, mean, std, crop_ratio=a.test_crop_ratio,
                                          interpolation=a.interpolation)
    if cfg.data.name == 'synthetic' and cfg.data.cache:
        return CachedDataset(build_dataset(cfg.data.name, None, split, None, **data_options(cfg)), tf)
    return build_dataset(cfg.data.name, cfg.data.root, split, tf, **data_options(cfg))


def load_pretrained(net, path):
    """Official checkpoints hold the weights directly or under 'state_dict' / 'model'; loaded strictly."""
    state = load_checkpoint(path, map_location='cpu')
    for key in ('state_dict', 'model'):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    load_state_dict(net, state, strict=True, what=f"pretrained '{path}'")


def torch_flops(net, input_size):
    """FLOPs (2 per multiply-accumulate) of one image as torch's FlopCounterMode counts them."""
    was = net.training
    net.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(torch.zeros(1, 3, input_size, input_size, device=next(net.parameters()).device))
    net.train(was)
    return counter.get_total_flops()


@torch.no_grad()
def evaluate(net, loader, device, channels_last=False):
    """Top-1 / top-5 accuracy (%) summed over ranks."""
    net.eval()
    stats = torch.zeros(3, dtype=torch.float64)
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        logits = net(x)
        k = min(5, logits.shape[1])
        top = logits.topk(k, dim=1).indices
        hit = top == y[:, None]
        stats += torch.tensor([hit[:, 0].sum().item(), hit.any(1).sum().item(), y.numel()], dtype=torch.float64)
    stats = all_reduce_sum(stats)
    return 100. * stats[0].item() / stats[2].item(), 100. * stats[1].item() / stats[2].item()


def train_one_epoch(net, loader, optimizer, scaler, mixup, cfg, run, epoch, steps_per_epoch, base_lr):
    net.train()
    set_epoch(loader, epoch)
    loss_meter, speed = AverageMeter('loss'), Throughput()
    total_steps = cfg.epochs * steps_per_epoch
    bar = progress(loader, total=steps_per_epoch, desc=f'epoch {epoch + 1}/{cfg.epochs}')
    lr = base_lr
    for it, (x, y) in enumerate(bar):
        lr = warmup_cosine(epoch * steps_per_epoch + it, steps_per_epoch, cfg.warmup_epochs, base_lr,
                           cfg.warmup_lr, cfg.min_lr, total_steps)
        set_lr(optimizer, lr)
        x, y = x.to(run.device, non_blocking=True), y.to(run.device, non_blocking=True)
        x, target = mixup(x, y)
        if cfg.channels_last and run.device.type == 'cuda':
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(run.device.type, enabled=run.amp):
            logits = net(x)
        loss = soft_target_cross_entropy(logits.float(), target)
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f'loss is {loss.item()} at epoch {epoch + 1}, iteration {it}')
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        loss_meter.update(loss.item(), x.shape[0])
        speed.update(x.shape[0] * run.world_size)
        update_progress(bar, loss=loss_meter.avg, lr=lr, img_s=speed.rate)
    return loss_meter.avg, lr, speed.rate


# ----------------------------------------------------------------------------------------- main
def main(argv=None):
    argv = _strip_launcher_args(sys.argv[1:] if argv is None else list(argv))
    cfg = parse_cli(DEFAULTS, argv, description='LightViT image classification')
    validate(cfg)
    run = setup_run(cfg)
    classes = num_classes(cfg.data.name, root=cfg.data.root, **data_options(cfg))
    net = models.LightViT(num_classes=classes, **model_kwargs(cfg))
    if cfg.model.pretrained:
        load_pretrained(net, cfg.model.pretrained)
        run.log(f'loaded {cfg.model.pretrained} (strict)')
    net.to(run.device)
    use_cl = cfg.channels_last and run.device.type == 'cuda'
    if use_cl:
        net = net.to(memory_format=torch.channels_last)
    params = sum(p.numel() for p in net.parameters())
    run.log(f'model {cfg.model.arch}: {params:,} params, {net.flops((3, cfg.input_size, cfg.input_size)):,} '
            f'MACs (official analytic count) at {cfg.input_size}px, {classes} classes')

    if cfg.mode == 'flops':
        analytic = net.flops((3, cfg.input_size, cfg.input_size))
        counted = torch_flops(net, cfg.input_size)
        run.log_metrics({'params': params, 'analytic_macs': analytic, 'torch_flops': counted})
        return run.finish(f'{cfg.model.arch}: params {params / 1e6:.2f}M, FLOPs {analytic / 1e9:.3f}G '
                          f'(official analytic MACs), torch counter {counted / 2e9:.3f} GMACs')
    if cfg.mode == 'speed':
        rate = throughput(net, cfg.speed.batch_size, cfg.speed.warmup, cfg.speed.iters, cfg.input_size,
                          run.device)
        run.log_metrics({'throughput': rate, 'batch_size': cfg.speed.batch_size})
        return run.finish(f'{cfg.model.arch} throughput on {run.device}: {rate:.1f} images/s '
                          f'(batch {cfg.speed.batch_size}, {cfg.input_size}px, fp32)')

    test_set = build_data(cfg, 'test')
    test_loader = build_loader(test_set, cfg.batch_size, shuffle=False, drop_last=False,
                               num_workers=cfg.data.num_workers, seed=cfg.seed)
    if cfg.mode == 'eval':
        state = None if cfg.model.pretrained else run.resume(model=net)
        if state is None and not cfg.model.pretrained:
            run.log('warning: evaluating a randomly initialised model (no model.pretrained, no last.pth)')
        top1, top5 = evaluate(net, test_loader, run.device, use_cl)
        run.log_metrics({'top1': top1, 'top5': top5})
        return run.finish(f'{cfg.model.arch} top-1 on {cfg.data.name} test: {top1:.2f}% (top-5 {top5:.2f}%)')

    train_set = build_data(cfg, 'train')
    train_loader = build_loader(train_set, cfg.batch_size, shuffle=True, drop_last=True,
                                num_workers=cfg.data.num_workers, seed=cfg.seed)
    steps_per_epoch = len(train_loader)
    global_batch = cfg.batch_size * run.world_size
    base_lr = cfg.lr * global_batch / cfg.lr_base_batch if cfg.lr_scaling == 'linear' else cfg.lr
    optimizer = build_optimizer(net, base_lr, cfg.weight_decay, eps=cfg.opt_eps, betas=cfg.betas)
    scaler = torch.amp.GradScaler(run.device.type, enabled=run.amp)
    mixup = Mixup(cfg.mixup.mixup, cfg.mixup.cutmix, cfg.mixup.prob, cfg.mixup.switch_prob, cfg.mixup.mode,
                  cfg.mixup.smoothing, classes)
    state = run.resume(model=net, optimizer=optimizer, scaler=scaler)
    best = float(state.get('best_top1', 0.)) if state else 0.
    last = dict(state.get('last_eval', {})) if state else {}
    ddp = wrap_ddp(net, run.device)
    run.log(f'{len(train_set)} train / {len(test_set)} test images, global batch {global_batch}, '
            f'lr {base_lr:.3g} ({cfg.lr_scaling} scaling), {cfg.epochs} epochs x {steps_per_epoch} iterations')

    for epoch in range(run.start_epoch, cfg.epochs):
        loss, lr, rate = train_one_epoch(ddp, train_loader, optimizer, scaler, mixup, cfg, run, epoch,
                                         steps_per_epoch, base_lr)
        metrics = {'epoch': epoch + 1, 'train_loss': loss, 'lr': lr, 'img_s': rate}
        is_best = False
        if (epoch + 1) % cfg.eval_interval == 0 or epoch + 1 == cfg.epochs:
            top1, top5 = evaluate(net, test_loader, run.device, use_cl)
            is_best = top1 > best
            best = max(best, top1)
            last = {'top1': top1, 'top5': top5}
            metrics.update(top1=top1, top5=top5, best_top1=best)
        run.log_metrics(metrics)
        run.save({'model': net.state_dict(), 'optimizer': optimizer.state_dict(), 'scaler': scaler.state_dict(),
                  'epoch': epoch + 1, 'best_top1': best, 'last_eval': last}, is_best=is_best)

    if not last:  # nothing trained in this call and nothing recorded: evaluate what we have
        top1, top5 = evaluate(net, test_loader, run.device, use_cl)
        last = {'top1': top1, 'top5': top5}
    return run.finish(f"LightViT ({cfg.model.arch}) top-1 on {cfg.data.name} test: {last['top1']:.2f}% "
                      f"(top-5 {last['top5']:.2f}%, best top-1 {best:.2f}%)")


if __name__ == '__main__':
    guard(main)
