"""SimMatch training: ``python main.py --cfg cfg.yaml [--opts key=value ...]``.

The embedded default (``cfg.yaml``) trains SimMatch on a 40-label subset of the synthetic dataset, then the same
job with ``supervised_only=true`` (unlabeled losses weighted by zero, same labels and steps), and prints both
test accuracies. ``configs/`` holds the paper's ImageNet 1%/10% and CIFAR/SVHN/STL-10 settings.
"""
import copy
import os

import torch
import torch.nn as nn

from common.checkpoint import load_checkpoint, load_state_dict
from common.config import parse_cli, save_config
from common.data import build_loader
from common.dist import seed_everything, unwrap, wrap_ddp
from common.errors import CheckpointError, ConfigError, guard
from common.log import setup_logger
from common.runner import Run, setup_run

from backbones import BACKBONES
from data import build_ssl_datasets
from engine import LR_SCHEDULES, train_one_epoch, validate
from losses import AGGREGATIONS, SimMatchLoss
from models import get_simmatch_model

DEFAULTS = {
    'output_dir': 'output/simmatch', 'seed': 0, 'device': 'auto', 'resume': True, 'amp': False,
    'data': {
        'name': 'synthetic', 'root': None, 'style': 'cifar', 'image_size': 32, 'num_classes': 10,
        'train_size': 2000, 'test_size': 500, 'cache': True, 'num_workers': 0,
        'num_labels': 40, 'label_seed': 0, 'split_file': '', 'include_lb_to_ulb': True, 'unlabeled_split': '',
        'crop_ratio': 0.875, 'mean': None, 'std': None,
    },
    # model (official flag names)
    'arch': 'SimMatch', 'backbone': 'wrn_28_2', 'norm': 'None', 'dim': 128, 'K': 0,
    'eman': False, 'ema_m': 0.999, 'use_ema_teacher': False, 'shuffle_bn': True,
    'bank_m': None, 'bank_norm_dim': 0, 'DA': True, 'DA_len': 32,
    'tt': 0.1, 'st': 0.1, 'c_smooth': 0.9, 'aggregation': 'mix', 'moco_path': '',
    # objective
    'lambda_u': 1.0, 'lambda_in': 1.0, 'threshold': 0.95, 'supervised_only': False, 'compare_supervised': False,
    'start_unlabel_epoch': 1,
    # optimisation
    'epochs': 1024, 'iters_per_epoch': 1024, 'batch_size': 64, 'mu': 7, 'randaug': False,
    'lr': 0.03, 'lr_schedule': 'fixmatch_cos', 'warmup_epoch': 0, 'schedule': [120, 160],
    'momentum': 0.9, 'nesterov': True, 'wd': 5e-4, 'wd_exclude_bn_bias': True,
    # evaluation
    'eval_model': 'ema', 'eval_freq': 5, 'test_batch_size': 256, 'evaluate': False, 'checkpoint': '',
}


def check_config(cfg):
    """Range checks that the schema's types cannot express; each error names its key."""
    def bad(key, why):
        raise ConfigError(f"config key '{key}' {why}")
    if cfg.arch != 'SimMatch':
        bad('arch', f"must be 'SimMatch', got '{cfg.arch}'")
    if cfg.backbone not in BACKBONES:
        bad('backbone', f"must be one of {', '.join(BACKBONES)}, got '{cfg.backbone}'")
    if cfg.norm not in ('None', 'BN', 'SyncBN'):
        bad('norm', f"must be None, BN or SyncBN, got '{cfg.norm}'")
    if cfg.norm == 'SyncBN' and cfg.backbone.startswith('wrn'):
        bad('norm', 'SyncBN is available for the ResNet encoders only')
    for key in ('threshold', 'c_smooth'):
        if not 0.0 <= cfg[key] <= 1.0:
            bad(key, f'must lie in [0, 1], got {cfg[key]}')
    for key in ('tt', 'st', 'lr'):
        if cfg[key] <= 0:
            bad(key, f'must be positive, got {cfg[key]}')
    if not 0.0 <= cfg.ema_m < 1.0:
        bad('ema_m', f'must lie in [0, 1), got {cfg.ema_m}')
    if cfg.bank_m is not None and (isinstance(cfg.bank_m, bool) or not isinstance(cfg.bank_m, (int, float))
                                   or not 0.0 <= cfg.bank_m < 1.0):
        bad('bank_m', f'must be null (overwrite the slot) or a momentum in [0, 1), got {cfg.bank_m!r}')
    if cfg.bank_norm_dim not in (0, 1):
        bad('bank_norm_dim', f'must be 0 (unit columns, the fix) or 1 (USB), got {cfg.bank_norm_dim}')
    if cfg.aggregation not in AGGREGATIONS:
        bad('aggregation', f"must be one of {', '.join(AGGREGATIONS)}, got '{cfg.aggregation}'")
    if cfg.lr_schedule not in LR_SCHEDULES:
        bad('lr_schedule', f"must be one of {', '.join(LR_SCHEDULES)}, got '{cfg.lr_schedule}'")
    if cfg.eval_model not in ('student', 'ema'):
        bad('eval_model', f"must be 'student' or 'ema', got '{cfg.eval_model}'")
    for key in ('epochs', 'batch_size', 'mu', 'dim', 'DA_len', 'eval_freq', 'test_batch_size'):
        if cfg[key] < 1:
            bad(key, f'must be at least 1, got {cfg[key]}')
    for key in ('iters_per_epoch', 'K', 'warmup_epoch', 'start_unlabel_epoch'):
        if cfg[key] < 0:
            bad(key, f'must be non-negative, got {cfg[key]}')
    if cfg.warmup_epoch >= cfg.epochs and cfg.lr_schedule != 'fixmatch_cos':
        bad('warmup_epoch', f'must be smaller than epochs ({cfg.epochs}), got {cfg.warmup_epoch}')
    for key in ('lambda_u', 'lambda_in', 'wd'):
        if cfg[key] < 0:
            bad(key, f'must be non-negative, got {cfg[key]}')
    if cfg.data.style not in ('imagenet', 'cifar'):
        bad('data.style', f"must be 'imagenet' or 'cifar', got '{cfg.data.style}'")
    if not cfg.data.split_file and cfg.data.num_labels < 1:
        bad('data.num_labels', f'must be at least 1 (or give data.split_file), got {cfg.data.num_labels}')
    if not 0.0 < cfg.data.crop_ratio <= 1.0:
        bad('data.crop_ratio', f'must lie in (0, 1], got {cfg.data.crop_ratio}')
    if cfg.evaluate and not cfg.checkpoint:
        bad('checkpoint', 'must name a checkpoint file when evaluate=true')


def build_model(cfg, num_classes, K):
    norm = nn.SyncBatchNorm if cfg.norm == 'SyncBN' else None
    return get_simmatch_model(cfg.arch)(
        BACKBONES[cfg.backbone], num_classes=num_classes, eman=cfg.eman, momentum=cfg.ema_m, dim=cfg.dim, norm=norm,
        K=K, DA=cfg.DA, DA_len=cfg.DA_len, tt=cfg.tt, st=cfg.st, c_smooth=cfg.c_smooth,
        use_ema_teacher=cfg.use_ema_teacher, bank_m=cfg.bank_m, bank_norm_dim=cfg.bank_norm_dim,
        shuffle_bn=cfg.shuffle_bn, aggregation=cfg.aggregation)


def build_optimizer(cfg, net):
    """SGD (nesterov) on the student; weight decay on every parameter (official ImageNet) or not on BN and
    biases (``wd_exclude_bn_bias``, USB)."""
    decay, no_decay = [], []
    for name, p in net.main.named_parameters():
        (no_decay if cfg.wd_exclude_bn_bias and (p.ndim <= 1 or name.endswith('.bias')) else decay).append(p)
    groups = [{'params': decay, 'weight_decay': cfg.wd}]
    if no_decay:
        groups.append({'params': no_decay, 'weight_decay': 0.0})
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)


def load_moco(net, path):
    """Official ``--moco-path``: ``encoder_q`` goes to the backbone, its MLP ``fc.0``/``fc.2`` to the head."""
    state = load_checkpoint(path)
    state = state.get('state_dict', state)
    mapped = {}
    for k, v in state.items():
        k = k[len('module.'):] if k.startswith('module.') else k
        if not k.startswith('encoder_q.'):
            continue
        k = 'backbone.' + k[len('encoder_q.'):]
        k = k.replace('backbone.fc.0', 'head.0').replace('backbone.fc.2', 'head.2')
        mapped[k] = v
    if not mapped:
        raise CheckpointError(f"'{path}' has no 'encoder_q.*' weights (a MoCo checkpoint is expected)")
    missing, unexpected = net.main.load_state_dict(mapped, strict=False)
    if unexpected:
        raise CheckpointError(f"'{path}': unexpected keys for the SimMatch encoder, e.g. {unexpected[:3]}")
    net.ema.load_state_dict(net.main.state_dict())
    return missing


def train(cfg, run, datasets):
    """Train one SimMatch run (or its supervised-only twin) and return its accuracies."""
    labeled, unlabeled, test, num_classes = datasets
    K = cfg.K or len(labeled)
    if K != len(labeled):
        raise ConfigError(f"config key 'K' must equal the labeled-set size ({len(labeled)}) or be 0, got {cfg.K}")
    seed_everything(cfg.seed, run.rank)
    device = run.device
    net = build_model(cfg, num_classes, K).to(device)
    if cfg.moco_path and not os.path.isfile(run.last_path):
        load_moco(net, cfg.moco_path)
    model = wrap_ddp(net, device, find_unused_parameters=True)
    optimizer = build_optimizer(cfg, net)
    scaler = torch.amp.GradScaler('cuda') if run.amp else None
    lambda_u, lambda_in = (0.0, 0.0) if cfg.supervised_only else (cfg.lambda_u, cfg.lambda_in)
    criterion = SimMatchLoss(lambda_u, lambda_in, cfg.threshold)
    loader_x = build_loader(labeled, cfg.batch_size, shuffle=True, drop_last=True,
                            num_workers=cfg.data.num_workers, seed=cfg.seed)
    loader_u = build_loader(unlabeled, cfg.batch_size * cfg.mu, shuffle=True, drop_last=True,
                            num_workers=cfg.data.num_workers, seed=cfg.seed + 1)
    iters = cfg.iters_per_epoch or len(loader_u)
    eval_net = net.main if cfg.eval_model == 'student' else net.ema
    run.log(f'{"supervised-only" if cfg.supervised_only else "SimMatch"}: {len(labeled)} labeled / '
            f'{len(unlabeled)} unlabeled images, K={K}, {cfg.epochs} epochs x {iters} iterations, batch '
            f'{cfg.batch_size} + {cfg.batch_size * cfg.mu} per process, {cfg.backbone}, lambda_u={lambda_u}, '
            f'lambda_in={lambda_in}')

    state = run.resume(model=net, optimizer=optimizer, scaler=scaler)
    best = state.get('best_acc', 0.0) if state else 0.0
    last = None
    for epoch in range(run.start_epoch, cfg.epochs):
        stats = train_one_epoch(model, criterion, optimizer, loader_x, loader_u, epoch, cfg, device, iters, scaler)
        metrics = {'epoch': epoch, **stats}
        is_best = False
        if (epoch + 1) % cfg.eval_freq == 0 or epoch + 1 == cfg.epochs:
            top1, top5 = validate(eval_net, test, device, cfg.test_batch_size)
            is_best, best, last = top1 > best, max(best, top1), (top1, top5)
            other = 'ema' if cfg.eval_model == 'student' else 'student'
            metrics.update(top1=top1, top5=top5, best_top1=best)
            metrics[f'top1_{other}'] = validate(net.ema if other == 'ema' else net.main, test, device,
                                                cfg.test_batch_size)[0]
        run.log_metrics(metrics)
        run.save({'model': net.state_dict(), 'optimizer': optimizer.state_dict(),
                  'scaler': scaler.state_dict() if scaler else None, 'epoch': epoch + 1, 'best_acc': best,
                  'arch': cfg.arch}, is_best=is_best)
    if last is None:  # resumed a finished run: evaluate it again
        last = validate(eval_net, test, device, cfg.test_batch_size)
        best = max(best, last[0])
    return {'top1': last[0], 'top5': last[1], 'best_top1': best}


def evaluate_checkpoint(cfg, run, datasets):
    """Official ``--evaluate``: load a checkpoint (ours or the released ``simmatch-1p/10p.pth``) and validate."""
    state = load_checkpoint(cfg.checkpoint)
    sd = state.get('state_dict', state.get('model', state)) if isinstance(state, dict) else None
    if not isinstance(sd, dict) or not any(k.endswith('bank') for k in sd):
        raise CheckpointError(f"'{cfg.checkpoint}' holds no SimMatch state_dict (no 'bank' buffer)")
    K = next(v for k, v in sd.items() if k.endswith('bank')).shape[1]
    net = build_model(cfg, datasets[3], K).to(run.device)
    load_state_dict(net, sd, strict=True, what='model')
    eval_net = net.main if cfg.eval_model == 'student' else net.ema
    top1, top5 = validate(eval_net, datasets[2], run.device, cfg.test_batch_size)
    return {'top1': top1, 'top5': top5, 'best_top1': top1}


def _sub_run(run, cfg, name):
    """A second run (the supervised-only twin) with its own output folder, log, metrics and checkpoints."""
    out = os.path.join(run.output_dir, name)
    cfg.output_dir = out
    if run.is_main:
        os.makedirs(out, exist_ok=True)
        save_config(cfg, out)
    return Run(cfg, run.device, run.rank, run.world_size, out, setup_logger(out, name=f'main.{name}'))


def main(argv=None):
    cfg = parse_cli(DEFAULTS, argv, description='SimMatch: semi-supervised learning with similarity matching')
    check_config(cfg)
    run = setup_run(cfg)
    datasets = build_ssl_datasets(cfg)
    what = f'{cfg.data.name} test, {len(datasets[0])} labels'
    if cfg.evaluate:
        result = evaluate_checkpoint(cfg, run, datasets)
        run.finish(f"top-1 of '{cfg.checkpoint}' ({cfg.eval_model}, {what}): {result['top1']:.2f}% "
                   f"(top-5 {result['top5']:.2f}%)")
        return result
    result = train(cfg, run, datasets)
    name = 'supervised-only' if cfg.supervised_only else 'SimMatch'
    headline = (f"{name} top-1 ({cfg.eval_model} model, {what}): {result['top1']:.2f}% "
                f"(best {result['best_top1']:.2f}%)")
    if cfg.compare_supervised and not cfg.supervised_only:
        cfg_b = copy.deepcopy(cfg)
        cfg_b.supervised_only, cfg_b.compare_supervised = True, False
        result['supervised_only'] = train(cfg_b, _sub_run(run, cfg_b, 'supervised_only'), datasets)
        headline += (f" | supervised-only, same labels and steps: {result['supervised_only']['top1']:.2f}% "
                     f"(best {result['supervised_only']['best_top1']:.2f}%)")
    run.finish(headline)
    return result


if __name__ == '__main__':
    guard(main)
