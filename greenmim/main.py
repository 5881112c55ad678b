"""GreenMIM: pre-training (MIM on visible patches only), end-to-end fine-tuning, FLOPs.

    python main.py --cfg cfg.yaml                                     # embedded default: pre-train + fine-tune
    torchrun --nproc_per_node=8 main.py --cfg configs/pretrain_swin_base_win7.yaml --opts data.root=/data/imagenet
    torchrun --nproc_per_node=16 main.py --cfg configs/finetune_swin_base_win7.yaml \
        --opts data.root=/data/imagenet finetune.pretrained=output/greenmim_swin_base/last.pth
    python main.py --cfg configs/pretrain_swin_base_win7.yaml --opts mode=flops output_dir=output/flops_b
"""
import math
import os
import sys

import torch
from torch.utils.flop_counter import FlopCounterMode

from common.checkpoint import load_checkpoint, save_checkpoint
from common.config import parse_cli
from common.data import DATASET_STATS, CachedDataset, build_dataset, build_loader, num_classes, set_epoch
from common.dist import all_reduce_mean, all_reduce_sum, unwrap, wrap_ddp
from common.errors import CheckpointError, ConfigError, guard
from common.log import AverageMeter, Throughput, progress, update_progress
from common.runner import setup_run
from common.schedule import cosine_lr, set_lr

import augment
import model_factory
from extract_backbone import convert_patch_merging_order, extract_backbone
from finetune import SwinClassifier, build_finetune_optimizer, load_pretrained_encoder

MODES = ('both', 'pretrain', 'finetune', 'flops')
ARCHS = tuple(model_factory.SWIN_ARCHS) + ('custom',)

DEFAULTS = {
    'output_dir': 'output/greenmim',
    'seed': 0,
    'device': 'auto',
    'mode': 'both',                      # both (pre-train then fine-tune) | pretrain | finetune | flops
    'resume': True,
    'amp': True,                         # CUDA only (official: on)
    'data': {'name': 'synthetic', 'root': None, 'image_size': 32, 'num_classes': 10, 'train_size': 2000,
             'test_size': 500, 'background': 'texture',   # synthetic only: texture | plain | gray
             'num_workers': 0,
             'cache': True},             # synthetic only: draw each image once, keep it in memory
    'model': {
        'arch': 'green_mim_swin_base_patch4_dec512b1',   # one of the official names, or custom
        # the four keys below are read only when arch is custom (the named archs fix them)
        'embed_dim': 128, 'depths': [2, 2, 18, 2], 'num_heads': [4, 8, 16, 32], 'window_size': 7,
        'img_size': 224, 'patch_size': 4,
        'decoder_embed_dim': 512, 'decoder_depth': 1, 'decoder_num_heads': 16,
        'official_decoder_order': False,  # True: the official release's latent ordering (see README)
        'search_group_size': False,       # True: the paper's cost search for the group size (official: off)
        'use_checkpoint': False,          # activation checkpointing
    },
    'pretrain': {
        'epochs': 800, 'warmup_epochs': 40, 'batch_size': 256, 'accum_iter': 1,
        'blr': 1.0e-4,                   # absolute lr = blr * global batch * accum_iter / 256
        'min_lr': 0.0, 'weight_decay': 0.05, 'betas': [0.9, 0.95],
        'mask_ratio': 0.75, 'norm_pix_loss': True, 'scale': [0.2, 1.0],
    },
    'finetune': {
        'epochs': 100, 'warmup_epochs': 20, 'batch_size': 48,
        'base_lr': 1.25e-3, 'warmup_lr': 2.5e-7, 'min_lr': 2.5e-7,  # all three times global batch / 512
        'lr_base_batch': 512,
        'weight_decay': 0.05, 'layer_decay': 0.9, 'drop_path': 0.1, 'clip_grad': 5.0,
        'betas': [0.9, 0.999], 'eps': 1.0e-8,
        'pretrained': '',                # mode=finetune: a GreenMIM checkpoint (MAE state or extracted backbone)
        'legacy_merge_order': False,     # the checkpoint uses the pre-2023 row-first patch-merging order
        'eval_interval': 1, 'test_crop_ratio': 0.875,
        'aug': {'scale': [0.08, 1.0], 'hflip': 0.5, 'randaug': True, 'ra_magnitude': 9, 'reprob': 0.25},
        'mixup': {'mixup': 0.8, 'cutmix': 1.0, 'prob': 1.0, 'switch_prob': 0.5, 'smoothing': 0.1},
    },
}

# encoder MACs of Swin-B w7 at 224 measured with the official code (spec card)
CARD_MACS = {'green_mim_swin_base_patch4_dec512b1': (3.897e9, 15.430e9)}


# ----------------------------------------------------------------------------------------- config
def _strip_launcher_args(argv):
    """Accept ``--local_rank=N`` / ``--local-rank N`` of old launchers (the rank comes from the env)."""
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


def arch_kwargs(cfg):
    m = cfg.model
    kw = dict(model_factory.SWIN_ARCHS[m.arch]) if m.arch != 'custom' else dict(
        embed_dim=m.embed_dim, depths=list(m.depths), num_heads=list(m.num_heads), window_size=m.window_size)
    kw.update(img_size=m.img_size, patch_size=m.patch_size)
    return kw


def validate(cfg):
    """Range checks that the schema cannot express; each error names its key."""
    def need(cond, key, msg):
        if not cond:
            raise ConfigError(f"config key '{key}' {msg}")

    need(cfg.mode in MODES, 'mode', f"must be one of {', '.join(MODES)}, got {cfg.mode!r}")
    need(cfg.model.arch in ARCHS, 'model.arch', f"must be one of {', '.join(ARCHS)}, got {cfg.model.arch!r} "
         f"(green_mim_twins_large_patch4_dec512b1 needs sparse convolutions and is not implemented)")
    kw = arch_kwargs(cfg)
    S = len(kw['depths'])
    need(S >= 1 and len(kw['num_heads']) == S, 'model.num_heads', 'needs one entry per stage (as model.depths)')
    need(all(d >= 1 for d in kw['depths']), 'model.depths', f"must be positive, got {kw['depths']}")
    for i, h in enumerate(kw['num_heads']):
        need(h >= 1 and (kw['embed_dim'] * 2 ** i) % h == 0, 'model.num_heads',
             f"must divide the stage width embed_dim * 2^i ({kw['embed_dim'] * 2 ** i} / {h})")
    need(kw['window_size'] >= 1, 'model.window_size', 'must be >= 1')
    m = cfg.model
    unit = m.patch_size * 2 ** (S - 1)
    need(m.patch_size >= 1 and m.img_size % unit == 0, 'model.img_size',
         f'must be a multiple of the mask unit patch_size * 2^(stages-1) = {unit}, got {m.img_size}')
    for i in range(S):
        res = m.img_size // m.patch_size // 2 ** i
        need(res <= kw['window_size'] or res % kw['window_size'] == 0, 'model.window_size',
             f"{kw['window_size']} does not tile the {res}x{res} map of stage {i + 1} (needs a divisor or >= it)")
    need(m.decoder_embed_dim % 4 == 0 and m.decoder_embed_dim % m.decoder_num_heads == 0,
         'model.decoder_embed_dim', 'must be a multiple of 4 and of model.decoder_num_heads')
    need(m.decoder_depth >= 0, 'model.decoder_depth', 'must be >= 0')
    p = cfg.pretrain
    units = (m.img_size // unit) ** 2
    keep = int(units * (1 - p.mask_ratio))
    need(0 < p.mask_ratio < 1 and 1 <= keep < units, 'pretrain.mask_ratio',
         f'must leave at least one visible and one masked unit of {units}, got {p.mask_ratio}')
    for sec, keys in (('pretrain', ('batch_size', 'accum_iter')), ('finetune', ('batch_size', 'lr_base_batch',
                                                                                  'eval_interval'))):
        for k in keys:
            need(cfg[sec][k] >= 1, f'{sec}.{k}', f'must be >= 1, got {cfg[sec][k]}')
    for sec, keys in (('pretrain', ('epochs', 'warmup_epochs', 'blr', 'min_lr', 'weight_decay')),
                      ('finetune', ('epochs', 'warmup_epochs', 'base_lr', 'warmup_lr', 'min_lr', 'weight_decay',
                                    'clip_grad'))):
        for k in keys:
            need(cfg[sec][k] >= 0, f'{sec}.{k}', f'must be >= 0, got {cfg[sec][k]}')
    for sec in ('pretrain', 'finetune'):
        b = cfg[sec].betas
        need(len(b) == 2 and all(0 <= v < 1 for v in b), f'{sec}.betas', f'must be two numbers in [0, 1), got {b}')
    s = p.scale
    need(len(s) == 2 and 0 < s[0] <= s[1] <= 1, 'pretrain.scale', f'must be [lo, hi] in (0, 1], got {s}')
    f = cfg.finetune
    need(0 < f.layer_decay <= 1, 'finetune.layer_decay', f'must be in (0, 1], got {f.layer_decay}')
    need(0 <= f.drop_path < 1, 'finetune.drop_path', f'must be in [0, 1), got {f.drop_path}')
    need(0 < f.test_crop_ratio <= 1, 'finetune.test_crop_ratio', f'must be in (0, 1], got {f.test_crop_ratio}')
    s = f.aug.scale
    need(len(s) == 2 and 0 < s[0] <= s[1] <= 1, 'finetune.aug.scale', f'must be [lo, hi] in (0, 1], got {s}')
    for k in ('hflip', 'reprob'):
        need(0 <= f.aug[k] <= 1, f'finetune.aug.{k}', f'must be a probability, got {f.aug[k]}')
    need(0 <= f.aug.ra_magnitude <= 30, 'finetune.aug.ra_magnitude', 'must be in [0, 30]')
    for k in ('prob', 'switch_prob'):
        need(0 <= f.mixup[k] <= 1, f'finetune.mixup.{k}', f'must be a probability, got {f.mixup[k]}')
    for k in ('mixup', 'cutmix'):
        need(f.mixup[k] >= 0, f'finetune.mixup.{k}', f'must be >= 0, got {f.mixup[k]}')
    need(0 <= f.mixup.smoothing < 1, 'finetune.mixup.smoothing', f'must be in [0, 1), got {f.mixup.smoothing}')
    need(cfg.mode != 'finetune' or not f.pretrained or os.path.isfile(f.pretrained), 'finetune.pretrained',
         f'names no file: {f.pretrained!r}')


# ----------------------------------------------------------------------------------------- data
def data_options(cfg):
    d = cfg.data
    if d.name == 'synthetic':
        return dict(image_size=d.image_size, num_classes=d.num_classes, train_size=d.train_size,
                    test_size=d.test_size, background=d.background)
    return {}


def build_data(cfg, split, transform):
    if cfg.data.name == 'synthetic' and cfg.data.cache:
        return CachedDataset(build_dataset(cfg.data.name, None, split, None, **data_options(cfg)), transform)
    return build_dataset(cfg.data.name, cfg.data.root, split, transform, **data_options(cfg))


def stats(cfg):
    return DATASET_STATS.get(cfg.data.name, DATASET_STATS['imagenet'])


# ----------------------------------------------------------------------------------------- models
def build_mae(cfg):
    m = cfg.model
    return model_factory.green_mim_swin(
        **arch_kwargs(cfg), decoder_embed_dim=m.decoder_embed_dim, decoder_depth=m.decoder_depth,
        decoder_num_heads=m.decoder_num_heads, norm_pix_loss=cfg.pretrain.norm_pix_loss,
        official_decoder_order=m.official_decoder_order, search_group_size=m.search_group_size,
        use_checkpoint=m.use_checkpoint)


def build_classifier(cfg, classes):
    kw = arch_kwargs(cfg)
    return SwinClassifier(num_classes=classes, img_size=kw['img_size'], patch_size=kw['patch_size'],
                          embed_dim=kw['embed_dim'], depths=kw['depths'], num_heads=kw['num_heads'],
                          window_size=kw['window_size'], drop_path_rate=cfg.finetune.drop_path,
                          use_checkpoint=cfg.model.use_checkpoint)


def read_pretrained(path, legacy_merge_order=False):
    state = load_checkpoint(path, map_location='cpu')
    for key in ('model', 'state_dict'):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict):
        raise CheckpointError(f"'{path}' holds no state_dict")
    return convert_patch_merging_order(state) if legacy_merge_order else state


def init_from_pretrained(net, state, what):
    try:
        missing = load_pretrained_encoder(net, state)
    except KeyError as e:
        raise CheckpointError(f'{what}: {e.args[0]}') from None
    return missing


@torch.no_grad()
def encoder_macs(mae, img_size, mask_ratio, device):
    """Multiply-accumulates of the encoder on one image: GreenMIM on the visible units vs all patches."""
    enc = mae.encoder.eval()
    x = torch.zeros(1, 3, img_size, img_size, device=device)
    L = mae.num_patches
    noise = torch.rand(1, L, generator=torch.Generator().manual_seed(0))
    mask, _ = mae.random_masking(x, mask_ratio, noise)
    out = []
    for m in (mask.bool(), torch.zeros(1, L, dtype=torch.bool, device=device)):
        with FlopCounterMode(display=False) as counter:
            enc(x, m)
        out.append(counter.get_total_flops() / 2)
    return out


# ----------------------------------------------------------------------------------------- loops
def pretrain_one_epoch(ddp, loader, optimizer, scaler, cfg, run, epoch, steps, lr_peak):
    """One epoch of MIM: per-iteration lr (warm-up + half cosine), AMP, gradient accumulation, no clipping."""
    p = cfg.pretrain
    ddp.train()
    set_epoch(loader, epoch)
    meter, speed = AverageMeter('loss'), Throughput()
    bar = progress(loader, total=steps, desc=f'pretrain {epoch + 1}/{p.epochs}')
    lr = 0.
    optimizer.zero_grad(set_to_none=True)
    for it, (x, _) in enumerate(bar):
        if it % p.accum_iter == 0:
            lr = cosine_lr(epoch * steps + it, p.epochs * steps, lr_peak, p.warmup_epochs * steps, p.min_lr)
            set_lr(optimizer, lr)
        x = x.to(run.device, non_blocking=True)
        with torch.autocast(run.device.type, enabled=run.amp):
            loss, _, _ = ddp(x, mask_ratio=p.mask_ratio)
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f'pre-training loss is {loss.item()} at epoch {epoch + 1}, iteration {it}')
        scaler.scale(loss / p.accum_iter).backward()
        if (it + 1) % p.accum_iter == 0:
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
        meter.update(loss.item(), x.shape[0])
        speed.update(x.shape[0] * run.world_size)
        update_progress(bar, loss=meter.avg, lr=lr, img_s=speed.rate)
    return all_reduce_mean(torch.tensor(meter.avg)).item(), lr, speed.rate


def finetune_one_epoch(ddp, loader, optimizer, scaler, mixup, cfg, run, epoch, steps, lrs):
    f = cfg.finetune
    ddp.train()
    set_epoch(loader, epoch)
    meter, speed = AverageMeter('loss'), Throughput()
    bar = progress(loader, total=steps, desc=f'finetune {epoch + 1}/{f.epochs}')
    base, warm, low = lrs
    lr = base
    for it, (x, y) in enumerate(bar):
        lr = cosine_lr(epoch * steps + it, f.epochs * steps, base, f.warmup_epochs * steps, low, warm)
        set_lr(optimizer, lr)
        x, y = x.to(run.device, non_blocking=True), y.to(run.device, non_blocking=True)
        x, target = mixup(x, y)
        with torch.autocast(run.device.type, enabled=run.amp):
            logits = ddp(x)
        loss = augment.soft_target_cross_entropy(logits.float(), target)
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f'fine-tuning loss is {loss.item()} at epoch {epoch + 1}, iteration {it}')
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if f.clip_grad > 0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(ddp.parameters(), f.clip_grad)
        scaler.step(optimizer)
        scaler.update()
        meter.update(loss.item(), x.shape[0])
        speed.update(x.shape[0] * run.world_size)
        update_progress(bar, loss=meter.avg, lr=lr, img_s=speed.rate)
    return all_reduce_mean(torch.tensor(meter.avg)).item(), lr, speed.rate


@torch.no_grad()
def evaluate(net, loader, device, amp=False):
    """Top-1 / top-5 accuracy (%), summed over ranks."""
    net.eval()
    hits = torch.zeros(3, dtype=torch.float64)
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with torch.autocast(device.type, enabled=amp):
            logits = net(x)
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices == y[:, None]
        hits += torch.tensor([top[:, 0].sum().item(), top.any(1).sum().item(), y.numel()], dtype=torch.float64)
    hits = all_reduce_sum(hits)
    return 100. * hits[0].item() / hits[2].item(), 100. * hits[1].item() / hits[2].item()


# ----------------------------------------------------------------------------------------- phases
def run_pretrain(cfg, run, state, start):
    """Epochs ``start .. pretrain.epochs - 1``; returns the MAE (trained) and the last loss."""
    p = cfg.pretrain
    mae = build_mae(cfg).to(run.device)
    mean, std = stats(cfg)
    train_set = build_data(cfg, 'train', augment.pretrain_transform(cfg.model.img_size, mean, std, p.scale))
    loader = build_loader(train_set, p.batch_size, shuffle=True, drop_last=True,
                          num_workers=cfg.data.num_workers, seed=cfg.seed)
    steps = len(loader)
    if steps == 0:
        raise ConfigError(f"config key 'pretrain.batch_size' ({p.batch_size}) exceeds the {len(train_set)} training "
                          f"images per process")
    eff_batch = p.batch_size * p.accum_iter * run.world_size
    lr_peak = p.blr * eff_batch / 256
    decay, no_decay = [], []
    for name, prm in mae.named_parameters():
        if not prm.requires_grad:
            continue  # the fixed decoder position embedding
        skip = prm.ndim <= 1 or name.endswith('.bias') or 'position_bias' in name or 'token' in name
        (no_decay if skip else decay).append(prm)
    optimizer = torch.optim.AdamW([{'params': no_decay, 'weight_decay': 0.}, {'params': decay,
                                   'weight_decay': p.weight_decay}], lr=lr_peak, betas=tuple(p.betas))
    scaler = torch.amp.GradScaler(run.device.type, enabled=run.amp)
    last_loss = state.get('last_loss') if state else None
    if state is not None:
        mae.load_state_dict(state['model'])
        optimizer.load_state_dict(state['optimizer'])
        scaler.load_state_dict(state['scaler'])
    ddp = wrap_ddp(mae, run.device)
    run.log(f'pre-training: {sum(q.numel() for q in mae.parameters()):,} params, {len(train_set)} images, '
            f'effective batch {eff_batch}, lr {lr_peak:.3g} (blr {p.blr:g}), mask ratio {p.mask_ratio} '
            f'({mae.num_patches} units of {mae.final_patch_size}px), {p.epochs} epochs x {steps} iterations')
    for epoch in range(start, p.epochs):
        loss, lr, rate = pretrain_one_epoch(ddp, loader, optimizer, scaler, cfg, run, epoch, steps, lr_peak)
        last_loss = loss
        run.log_metrics({'phase': 'pretrain', 'epoch': epoch + 1, 'pretrain_loss': loss, 'lr': lr, 'img_s': rate})
        run.save({'phase': 'pretrain', 'epoch': epoch + 1, 'model': mae.state_dict(),
                  'optimizer': optimizer.state_dict(), 'scaler': scaler.state_dict(), 'last_loss': loss})
    if run.is_main:
        save_checkpoint({'model': mae.state_dict(), 'epoch': p.epochs},
                        os.path.join(run.output_dir, 'pretrained.pth'))
    return mae, last_loss


def run_finetune(cfg, run, state, start, offset, init_state, init_what):
    """Fine-tuning epochs ``start - offset .. finetune.epochs - 1`` (global epoch = local + offset)."""
    f = cfg.finetune
    classes = num_classes(cfg.data.name, root=cfg.data.root, **data_options(cfg))
    net = build_classifier(cfg, classes)
    if state is None and init_state is not None:
        missing = init_from_pretrained(net, init_state, init_what)
        run.log(f'fine-tuning from {init_what} (not in the checkpoint: {", ".join(missing) or "nothing"})')
    elif state is None:
        run.log('fine-tuning from a random initialisation (no pre-trained encoder given)')
    net.to(run.device)
    mean, std = stats(cfg)
    size, a = cfg.model.img_size, f.aug
    train_set = build_data(cfg, 'train', augment.finetune_transform(
        size, mean, std, a.scale, a.hflip, a.randaug, ra_magnitude=a.ra_magnitude, reprob=a.reprob))
    test_set = build_data(cfg, 'test', augment.test_transform(size, mean, std, f.test_crop_ratio))
    loader = build_loader(train_set, f.batch_size, shuffle=True, drop_last=True,
                          num_workers=cfg.data.num_workers, seed=cfg.seed)
    test_loader = build_loader(test_set, f.batch_size, shuffle=False, drop_last=False,
                               num_workers=cfg.data.num_workers, seed=cfg.seed)
    steps = len(loader)
    if steps == 0:
        raise ConfigError(f"config key 'finetune.batch_size' ({f.batch_size}) exceeds the {len(train_set)} training "
                          f"images per process")
    scale = f.batch_size * run.world_size / f.lr_base_batch
    lrs = (f.base_lr * scale, f.warmup_lr * scale, f.min_lr * scale)
    optimizer = build_finetune_optimizer(net, lrs[0], f.weight_decay, f.layer_decay, f.betas, f.eps)
    scaler = torch.amp.GradScaler(run.device.type, enabled=run.amp)
    mixup = augment.Mixup(f.mixup.mixup, f.mixup.cutmix, f.mixup.prob, f.mixup.switch_prob, f.mixup.smoothing,
                          classes)
    best, last = 0., {}
    if state is not None:
        net.load_state_dict(state['model'])
        optimizer.load_state_dict(state['optimizer'])
        scaler.load_state_dict(state['scaler'])
        best, last = float(state.get('best_top1', 0.)), dict(state.get('last_eval', {}))
    ddp = wrap_ddp(net, run.device)
    run.log(f'fine-tuning: {sum(q.numel() for q in net.parameters()):,} params, {classes} classes, '
            f'{len(train_set)} train / {len(test_set)} test images, lr {lrs[0]:.3g} (layer decay {f.layer_decay}), '
            f'{f.epochs} epochs x {steps} iterations')
    for epoch in range(max(start - offset, 0), f.epochs):
        loss, lr, rate = finetune_one_epoch(ddp, loader, optimizer, scaler, mixup, cfg, run, epoch, steps, lrs)
        metrics = {'phase': 'finetune', 'epoch': offset + epoch + 1, 'finetune_epoch': epoch + 1,
                   'train_loss': loss, 'lr': lr, 'img_s': rate}
        is_best = False
        if (epoch + 1) % f.eval_interval == 0 or epoch + 1 == f.epochs:
            top1, top5 = evaluate(net, test_loader, run.device, run.amp)
            is_best, best = top1 > best, max(best, top1)
            last = {'top1': top1, 'top5': top5}
            metrics.update(top1=top1, top5=top5, best_top1=best)
        run.log_metrics(metrics)
        run.save({'phase': 'finetune', 'epoch': offset + epoch + 1, 'model': net.state_dict(),
                  'optimizer': optimizer.state_dict(), 'scaler': scaler.state_dict(), 'best_top1': best,
                  'last_eval': last}, is_best=is_best)
    if not last:
        top1, top5 = evaluate(net, test_loader, run.device, run.amp)
        last = {'top1': top1, 'top5': top5}
    return last, best


# ----------------------------------------------------------------------------------------- main
def main(argv=None):
    argv = _strip_launcher_args(sys.argv[1:] if argv is None else list(argv))
    cfg = parse_cli(DEFAULTS, argv, description='GreenMIM pre-training and fine-tuning')
    validate(cfg)
    run = setup_run(cfg)
    name = cfg.model.arch

    if cfg.mode == 'flops':
        mae = build_mae(cfg).to(run.device)
        green, dense = encoder_macs(mae, cfg.model.img_size, cfg.pretrain.mask_ratio, run.device)
        enc_params = sum(q.numel() for q in mae.encoder.parameters())
        run.log_metrics({'encoder_params': enc_params, 'params': sum(q.numel() for q in mae.parameters()),
                         'green_macs': green, 'dense_macs': dense, 'ratio': dense / green})
        card = CARD_MACS.get(name)
        ref = (f' [card, official code: {card[0] / 1e9:.3f} G vs {card[1] / 1e9:.3f} G, '
               f'{card[1] / card[0]:.2f}x]') if card else ''
        return run.finish(f'{name} encoder MACs per image: GreenMIM {green / 1e9:.3f} G (mask ratio '
                          f'{cfg.pretrain.mask_ratio}) vs dense {dense / 1e9:.3f} G, {dense / green:.2f}x fewer{ref}')

    state = run.resume()
    start = run.start_epoch
    phase = state.get('phase') if state else None
    P = cfg.pretrain.epochs if cfg.mode in ('both', 'pretrain') else 0
    if phase is not None and phase not in ('pretrain', 'finetune'):
        raise CheckpointError(f"'{run.last_path}' has an unknown phase {phase!r}")
    if cfg.mode == 'finetune' and phase == 'pretrain' or cfg.mode == 'pretrain' and phase == 'finetune':
        raise ConfigError(f"config key 'mode' ({cfg.mode}) does not match the {phase} checkpoint "
                          f"'{run.last_path}'; use another output_dir or resume=false")

    if cfg.mode == 'pretrain' or (cfg.mode == 'both' and phase in (None, 'pretrain') and start <= P):
        mae, loss = run_pretrain(cfg, run, state if phase == 'pretrain' else None, start)
        if cfg.mode == 'pretrain':
            shown = 'n/a (no epoch run)' if loss is None else f'{loss:.4f}'
            return run.finish(f'GreenMIM pre-training ({name}) on {cfg.data.name}: final loss {shown} '
                              f'(normalised-pixel MSE on masked units)')
        init_state = {k: v.cpu() for k, v in mae.state_dict().items()}
        init_what = f'the encoder pre-trained in this run ({P} epochs)'
        state = None
    elif cfg.mode == 'finetune':
        init_state = read_pretrained(cfg.finetune.pretrained, cfg.finetune.legacy_merge_order) \
            if cfg.finetune.pretrained else None
        init_what = f"'{cfg.finetune.pretrained}'"
    else:  # both, already fine-tuning
        init_state, init_what = None, ''

    last, best = run_finetune(cfg, run, state if phase == 'finetune' else None, start, P, init_state, init_what)
    return run.finish(f"GreenMIM fine-tuned top-1 ({name}) on {cfg.data.name} test: {last['top1']:.2f}% "
                      f"(top-5 {last['top5']:.2f}%, best top-1 {best:.2f}%)")


if __name__ == '__main__':
    guard(main)
