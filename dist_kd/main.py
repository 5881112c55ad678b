"""DIST: knowledge distillation from a stronger teacher (Huang et al., NeurIPS 2022) -- the training job.

    python main.py --cfg cfg.yaml [--opts key=value ...]

One code path trains a student with the loss chosen by ``kd`` (official strings: '' = cross-entropy alone,
'kd' / 'kdt<tau>' = classic KD, 'dist' / 'dist_t<tau>' = DIST) from a frozen teacher. The teacher is loaded
from ``teacher_ckpt`` (torchvision / timm state dict or the official ``{'model': ...}`` format), taken from
torchvision/timm with ``teacher_pretrained``, or -- when neither is given and ``teacher_epochs > 0`` --
trained first with plain cross-entropy by the same loop. Each entry of ``compare`` trains the same student
again (same seed, same steps) with another loss, so one run prints DIST vs KD vs no distillation.

A run is a list of stages (teacher?, student with ``kd``, students of ``compare``); ``last.pth`` records the
global epoch across stages, so a killed run resumes inside the stage it was in.
"""
import math
import os

import torch
import torch.nn as nn

from common.checkpoint import load_checkpoint, load_state_dict, save_checkpoint
from common.config import parse_cli
from common.data import DATASET_STATS, CachedDataset, build_dataset, build_loader, set_epoch
from common.dist import seed_everything, wrap_ddp
from common.errors import CheckpointError, ConfigError, guard
from common.runner import setup_run

import augment
import losses
import models
import optim
import scheduler as schedules
from ema import ModelEMA
from engine import evaluate, train_one_epoch

DEFAULTS = {
    'output_dir': 'output/dist_kd',
    'seed': 42,
    'device': 'auto',
    'amp': False,
    'resume': True,
    'data': {
        'name': 'synthetic',        # synthetic | cifar100 | cifar10 | imagefolder (ImageNet: root/train, root/val)
        'root': None,
        'image_size': 32,           # training crop (224 for ImageNet)
        'num_classes': 10,          # synthetic only
        'train_size': 2000,         # synthetic only
        'test_size': 500,           # synthetic only
        'num_workers': 0,
        'transform': 'auto',        # auto | cifar | imagenet (auto: imagenet for image folders, else cifar)
    },
    # models (official names: cifar_<name>, tv_<name>, timm_<name>, mobilenet_v1, resnet18..152)
    'model': 'cifar_resnet8',
    'teacher_model': 'cifar_resnet20',
    'teacher_ckpt': '',
    'teacher_pretrained': False,
    'teacher_epochs': 0,            # > 0 and no teacher_ckpt / teacher_pretrained: train the teacher first
    # distillation
    'kd': 'dist',                   # '' | kd | kdt<tau> | dist | dist_t<tau>
    'ori_loss_weight': 1.0,
    'kd_loss_weight': 2.0,
    'kd_chunk_size': 0,             # > 0: KD term per chunk of this many images (emulates per-GPU batches)
    'compare': [],                  # extra student runs: [{kd: kd, ori_loss_weight: 0.9, kd_loss_weight: 1.0}, ...]
    # optimisation (official keys)
    'batch_size': 64,               # per process
    'val_batch_size_multiplier': 1.0,
    'epochs': 100,
    'opt': 'sgd',
    'opt_eps': 1e-8,
    'momentum': 0.9,
    'weight_decay': 1e-4,
    'sgd_no_nesterov': False,
    'opt_no_filter': False,
    'sched': 'step',
    'lr': 0.1,
    'warmup_epochs': 0,
    'warmup_lr': 1e-4,
    'decay_epochs': 30.0,
    'decay_rate': 0.1,
    'decay_by_epoch': False,
    'min_lr': 1e-5,
    # regularisation / augmentation
    'smoothing': 0.0,
    'aa': '',                       # e.g. rand-m9-mstd0.5
    'color_jitter': 0.0,
    'reprob': 0.0,
    'remode': 'pixel',
    'model_ema': False,
    'model_ema_decay': 0.9999,
}

COMPARE_KEYS = ('kd', 'ori_loss_weight', 'kd_loss_weight')


# ------------------------------------------------------------------------------------------------ config
def _kd_string(value):
    """The kd method as a string ('' for none; the command line may spell it kd= or kd="''")."""
    v = '' if value is None else str(value).strip()
    return '' if v in ("''", '""', 'none', 'None', 'null') else v


def _check_model_name(key, name, num_classes=10):
    try:
        with torch.device('meta'):
            models.build_model(name, num_classes)
    except (ValueError, ImportError) as e:
        raise ConfigError(f"config key '{key}': {e}") from None


def student_runs(cfg):
    """[(kd, ori_loss_weight, kd_loss_weight)] for the main student and each ``compare`` entry."""
    runs = [(_kd_string(cfg.kd), float(cfg.ori_loss_weight), float(cfg.kd_loss_weight))]
    for i, entry in enumerate(cfg.compare):
        if not isinstance(entry, dict) or 'kd' not in entry:
            raise ConfigError(f"config key 'compare[{i}]' must be a mapping with a 'kd' entry and optional "
                              f"'ori_loss_weight' / 'kd_loss_weight', got {entry!r}")
        bad = [k for k in entry if k not in COMPARE_KEYS]
        if bad:
            raise ConfigError(f"config key 'compare[{i}]' has unknown key(s) {', '.join(map(str, bad))}; "
                              f"valid: {', '.join(COMPARE_KEYS)}")
        try:
            runs.append((_kd_string(entry['kd']), float(entry.get('ori_loss_weight', 1.0)),
                         float(entry.get('kd_loss_weight', 1.0))))
        except (TypeError, ValueError):
            raise ConfigError(f"config key 'compare[{i}]': loss weights must be numbers, got {entry!r}") from None
    for i, (kd, _, _) in enumerate(runs):
        try:
            losses.parse_kd_method(kd)
        except ValueError as e:
            raise ConfigError(f"config key '{'kd' if i == 0 else f'compare[{i - 1}].kd'}': {e}") from None
    return runs


def validate(cfg):
    """Range checks that name the offending key (types and unknown keys are checked by common.config)."""
    def need(ok, key, msg):
        if not ok:
            raise ConfigError(f"config key '{key}' {msg}, got {cfg_get(key)!r}")

    def cfg_get(key):
        node = cfg
        for part in key.split('.'):
            node = node[part]
        return node

    need(cfg.epochs >= 1, 'epochs', 'must be >= 1')
    need(cfg.batch_size >= 1, 'batch_size', 'must be >= 1')
    need(cfg.val_batch_size_multiplier > 0, 'val_batch_size_multiplier', 'must be > 0')
    need(cfg.lr > 0, 'lr', 'must be > 0')
    need(cfg.teacher_epochs >= 0, 'teacher_epochs', 'must be >= 0')
    need(cfg.kd_chunk_size >= 0, 'kd_chunk_size', 'must be >= 0')
    need(cfg.kd_chunk_size == 0 or cfg.batch_size % cfg.kd_chunk_size == 0, 'kd_chunk_size',
         f'must divide batch_size={cfg.batch_size}')
    need(cfg.opt in optim.OPTIMIZERS, 'opt', f"must be one of {', '.join(optim.OPTIMIZERS)}")
    need(cfg.sched in schedules.SCHEDULERS, 'sched', f"must be one of {', '.join(schedules.SCHEDULERS)}")
    need(cfg.sched != 'step' or cfg.decay_epochs > 0, 'decay_epochs', 'must be > 0 for the step schedule')
    need(cfg.warmup_epochs >= 0, 'warmup_epochs', 'must be >= 0')
    need(cfg.weight_decay >= 0, 'weight_decay', 'must be >= 0')
    need(0 <= cfg.smoothing < 1, 'smoothing', 'must be in [0, 1)')
    need(0 <= cfg.reprob <= 1, 'reprob', 'must be in [0, 1]')
    need(cfg.remode in ('const', 'rand', 'pixel'), 'remode', 'must be one of const, rand, pixel')
    need(cfg.color_jitter >= 0, 'color_jitter', 'must be >= 0')
    need(0 <= cfg.model_ema_decay < 1, 'model_ema_decay', 'must be in [0, 1)')
    need(cfg.data.transform in ('auto', 'cifar', 'imagenet'), 'data.transform', 'must be auto, cifar or imagenet')
    need(cfg.data.num_workers >= 0, 'data.num_workers', 'must be >= 0')
    if cfg.aa:
        try:
            augment.rand_augment_transform(cfg.aa)
        except ValueError as e:
            raise ConfigError(f"config key 'aa': {e}") from None
    if not isinstance(cfg.compare, list):
        raise ConfigError(f"config key 'compare' must be a list, got {cfg.compare!r}")
    runs = student_runs(cfg)
    _check_model_name('model', cfg.model)
    if any(kd for kd, _, _ in runs):
        if not cfg.teacher_model:
            raise ConfigError("config key 'teacher_model' is empty, but a distillation loss is asked for")
        _check_model_name('teacher_model', cfg.teacher_model)
        if not cfg.teacher_ckpt and not cfg.teacher_pretrained and cfg.teacher_epochs == 0:
            raise ConfigError("no teacher: set 'teacher_ckpt' to a checkpoint path, 'teacher_pretrained: true' "
                              "(tv_/timm_ models), or 'teacher_epochs' > 0 to train the teacher first")
    return runs


# ------------------------------------------------------------------------------------------------ data
def build_data(cfg):
    d = cfg.data
    synthetic = d.name == 'synthetic'
    options = dict(num_classes=d.num_classes, image_size=d.image_size, train_size=d.train_size,
                   test_size=d.test_size, seed=cfg.seed) if synthetic else {}
    style = d.transform if d.transform != 'auto' else ('imagenet' if d.name in ('imagefolder', 'imagenet')
                                                        else 'cifar')
    mean, std = DATASET_STATS.get(d.name, DATASET_STATS['imagenet'])
    train_tf = augment.build_train_transform(style, d.image_size, mean, std, cfg.aa, cfg.color_jitter, cfg.reprob,
                                             cfg.remode)
    val_tf = augment.build_val_transform(style, d.image_size, mean, std)
    if synthetic:
        train_set = CachedDataset(build_dataset(d.name, d.root, 'train', None, **options), train_tf)
        val_set = CachedDataset(build_dataset(d.name, d.root, 'test', None, **options), val_tf)
    else:
        train_set = build_dataset(d.name, d.root, 'train', train_tf)
        val_set = build_dataset(d.name, d.root, 'val' if d.name in ('imagefolder', 'imagenet') else 'test', val_tf)
    classes = len(train_set.classes) if not synthetic else d.num_classes
    train_loader = build_loader(train_set, cfg.batch_size, shuffle=True, drop_last=True,
                                num_workers=d.num_workers, seed=cfg.seed)
    val_loader = build_loader(val_set, max(1, int(cfg.batch_size * cfg.val_batch_size_multiplier)), shuffle=False,
                              drop_last=False, num_workers=d.num_workers, seed=cfg.seed)
    return train_loader, val_loader, classes


# ------------------------------------------------------------------------------------------------ teacher
def build_teacher(cfg, num_classes, device, state_dict=None):
    """The frozen teacher: from ``state_dict`` (trained by this run), ``teacher_ckpt`` or pretrained weights."""
    try:
        teacher = models.build_model(cfg.teacher_model, num_classes,
                                     pretrained=bool(cfg.teacher_pretrained and state_dict is None
                                                     and not cfg.teacher_ckpt))
    except (ValueError, ImportError) as e:
        raise ConfigError(f"config key 'teacher_model': {e}") from None
    except OSError as e:    # torchvision / timm could not fetch weights (e.g. no network)
        raise ConfigError(f"pretrained weights of '{cfg.teacher_model}' could not be fetched ({e}); download them "
                          f"and pass the file as teacher_ckpt") from None
    if state_dict is not None:
        load_state_dict(teacher, state_dict, strict=True, what='teacher')
    elif cfg.teacher_ckpt:
        obj = load_checkpoint(cfg.teacher_ckpt)
        try:
            sd = models.extract_state_dict(obj)
        except ValueError as e:
            raise CheckpointError(f"teacher checkpoint '{cfg.teacher_ckpt}': {e}") from None
        load_state_dict(teacher, sd, strict=True, what=f"teacher checkpoint '{cfg.teacher_ckpt}'")
    teacher.to(device).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


# ------------------------------------------------------------------------------------------------ stages
def plan_stages(cfg, runs):
    needs_teacher = any(kd for kd, _, _ in runs)
    stages = []
    if needs_teacher and not cfg.teacher_ckpt and not cfg.teacher_pretrained:
        stages.append({'name': 'teacher', 'model': cfg.teacher_model, 'kd': '', 'ori_loss_weight': 1.0,
                       'kd_loss_weight': 0.0, 'epochs': cfg.teacher_epochs, 'primary': False})
    for i, (kd, ori_w, kd_w) in enumerate(runs):
        stages.append({'name': f"student:{kd or 'none'}", 'model': cfg.model, 'kd': kd, 'ori_loss_weight': ori_w,
                       'kd_loss_weight': kd_w, 'epochs': cfg.epochs, 'primary': i == 0})
    offset = 0
    for st in stages:
        st['offset'] = offset
        offset += st['epochs']
    return stages


def train_stage(run, cfg, idx, st, loaders, num_classes, teacher, teacher_sd, results, state):
    """Train one model with the loss of stage ``st``; returns (model to keep, result dict)."""
    train_loader, val_loader = loaders
    device = run.device
    if state is None:
        seed_everything(cfg.seed, run.rank)       # every student starts from the same weights and batches
    model = models.build_model(st['model'], num_classes).to(device)
    ddp_model = wrap_ddp(model, device)
    optimizer = optim.build_optimizer(cfg.opt, model, cfg.lr, eps=cfg.opt_eps, momentum=cfg.momentum,
                                      weight_decay=cfg.weight_decay, filter_bias_and_bn=not cfg.opt_no_filter,
                                      nesterov=not cfg.sgd_no_nesterov)
    spe = len(train_loader)
    scheduler = schedules.build_scheduler(cfg.sched, optimizer, cfg.warmup_epochs * spe, cfg.warmup_lr,
                                          cfg.decay_epochs * spe, cfg.decay_rate, st['epochs'] * spe, spe,
                                          cfg.decay_by_epoch, cfg.min_lr)
    ema = ModelEMA(model, cfg.model_ema_decay) if cfg.model_ema else None
    scaler = torch.amp.GradScaler('cuda') if run.amp else None
    ce = nn.CrossEntropyLoss(label_smoothing=cfg.smoothing)
    criterion = losses.KDLoss(ddp_model, teacher if st['kd'] else None, ce, st['kd'], st['ori_loss_weight'],
                              st['kd_loss_weight'], cfg.kd_chunk_size)
    start, best = 0, {'top1': -math.inf}
    if state is not None:
        load_state_dict(model, state['model'], strict=True, what=f"{st['name']} model in last.pth")
        optimizer.load_state_dict(state['optimizer'])
        if ema is not None and state.get('ema') is not None:
            ema.load_state_dict(state['ema'])
        if scaler is not None and state.get('scaler') is not None:
            scaler.load_state_dict(state['scaler'])
        start, best = state['epoch'] - st['offset'], state['best']
    run.log(f"stage {idx} {st['name']}: {st['model']} ({sum(p.numel() for p in model.parameters()):,} params), "
            f"kd={st['kd'] or 'none'} ori_loss_weight={st['ori_loss_weight']} kd_loss_weight={st['kd_loss_weight']}, "
            f"epochs {start}..{st['epochs']}")
    result = None
    for epoch in range(start, st['epochs']):
        set_epoch(train_loader, epoch)
        stats = train_one_epoch(criterion, ddp_model, train_loader, optimizer, scheduler, epoch, device, ema, scaler,
                                run.amp, desc=f"{st['name']} {epoch + 1}/{st['epochs']}")
        val = evaluate(model, val_loader, device, run.amp)
        if ema is not None:     # B2: the EMA model's metrics replace the raw model's
            raw = val
            val = evaluate(ema.module, val_loader, device, run.amp)
            val['top1_raw'] = raw['top1']
        is_best = val['top1'] > best['top1']
        if is_best:
            best = {'top1': val['top1'], 'top5': val['top5'], 'epoch': epoch}
        last = epoch == st['epochs'] - 1
        result = {'stage': st['name'], 'model': st['model'], 'kd': st['kd'], 'top1': val['top1'],
                  'top5': val['top5'], 'best_top1': best['top1'], 'best_epoch': best['epoch']}
        run.log_metrics({'stage': st['name'], 'epoch': epoch, 'global_epoch': st['offset'] + epoch + 1, **stats, **val})
        keep = ema.module if ema is not None else model
        if st['name'] == 'teacher' and last:
            teacher_sd = keep.state_dict()
        run.save({'epoch': st['offset'] + epoch + 1, 'stage': idx, 'stage_name': st['name'],
                  'model': model.state_dict(), 'optimizer': optimizer.state_dict(),
                  'ema': ema.state_dict() if ema is not None else None,
                  'scaler': scaler.state_dict() if scaler is not None else None,
                  'best': best, 'teacher': teacher_sd, 'results': results + ([result] if last else [])},
                 is_best=is_best and st['primary'])
    if result is None:      # nothing left to train (resumed at the stage's end)
        result = state['results'][-1]
    return (ema.module if ema is not None else model), result


def method_label(kd):
    """'' -> 'alone', 'kd' -> 'KD (T=4)', 'dist_t4' -> 'DIST (T=4)', ..."""
    if not kd:
        return 'alone'
    loss = losses.parse_kd_method(kd)
    return f"{'DIST' if isinstance(loss, losses.DIST) else 'KD'} (T={loss.tau:g})"


def headline(cfg, results, teacher_top1):
    parts = []
    if teacher_top1 is not None:
        parts.append(f'teacher {cfg.teacher_model} {teacher_top1:.2f}%')
    students = [r for r in results if r['stage'].startswith('student')]
    parts.append(f'student {cfg.model}: ' + ' | '.join(f"{method_label(r['kd'])} {r['top1']:.2f}%" for r in students))
    split = 'val' if cfg.data.name in ('imagefolder', 'imagenet') else 'test'
    return f'top-1 on {cfg.data.name} {split} (last epoch): ' + ' | '.join(parts)


def main(argv=None):
    cfg = parse_cli(DEFAULTS, argv, description='DIST knowledge distillation (teacher -> student)')
    runs = validate(cfg)
    stages = plan_stages(cfg, runs)
    run = setup_run(cfg)
    train_loader, val_loader, num_classes = build_data(cfg)
    state = run.resume()
    done = state['epoch'] if state else 0
    results = list(state['results']) if state else []
    if state is not None:
        k = state.get('stage')
        if not isinstance(k, int) or k >= len(stages) or state.get('stage_name') != stages[k]['name'] \
                or done > stages[k]['offset'] + stages[k]['epochs']:
            raise CheckpointError(f"'{run.last_path}' was written by a run with other stages or epochs; use another "
                                  f"output_dir or resume=false to start afresh")
    teacher, teacher_sd, teacher_top1 = None, None, None
    if any(kd for kd, _, _ in runs) and (cfg.teacher_ckpt or cfg.teacher_pretrained):
        teacher = build_teacher(cfg, num_classes, run.device)
    for idx, st in enumerate(stages):
        end = st['offset'] + st['epochs']
        if st['name'] == 'teacher' and done >= end:      # trained before the restart
            teacher_sd = state['teacher']
            teacher = build_teacher(cfg, num_classes, run.device, teacher_sd)
        if done >= end:
            continue
        if teacher is not None and teacher_top1 is None and st['kd']:
            teacher_top1 = evaluate(teacher, val_loader, run.device, run.amp)['top1']
            run.log(f'teacher {cfg.teacher_model}: top-1 {teacher_top1:.2f}% (sanity check before distillation)')
        stage_state = state if (state is not None and state.get('stage') == idx and done > st['offset']) else None
        model, result = train_stage(run, cfg, idx, st, (train_loader, val_loader), num_classes, teacher, teacher_sd,
                                    results, stage_state)
        results.append(result)
        if st['name'] == 'teacher':
            teacher_sd = model.state_dict()
            teacher = build_teacher(cfg, num_classes, run.device, teacher_sd)
            save_checkpoint({'model': teacher_sd, 'model_name': cfg.teacher_model, 'top1': result['top1']},
                            os.path.join(run.output_dir, 'teacher.pth'))
            run.log(f"teacher trained: top-1 {result['top1']:.2f}%, saved to {run.output_dir}/teacher.pth")
    if teacher_top1 is None:
        teacher_top1 = next((r['top1'] for r in results if r['stage'] == 'teacher'), None)
        if teacher_top1 is None and teacher is not None:
            teacher_top1 = evaluate(teacher, val_loader, run.device, run.amp)['top1']
    for r in results:
        run.log(f"  {r['stage']:<18} {r['model']:<20} top-1 {r['top1']:6.2f}%  top-5 {r['top5']:6.2f}%  "
                f"best top-1 {r['best_top1']:6.2f}% (epoch {r['best_epoch'] + 1})")
    run.finish(headline(cfg, results, teacher_top1))
    return {'results': results, 'teacher_top1': teacher_top1}


if __name__ == '__main__':
    guard(main)
