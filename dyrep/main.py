"""DyRep training (card Sec. 7), the plain-DBB baseline (``dbb: true``), and deployment.

    python main.py --cfg cfg.yaml [--opts key=value ...]                 # train, then deploy and compare
    python main.py --cfg cfg.yaml --deploy [--resume path/to/last.pth]   # deploy a checkpoint only
    torchrun --nproc_per_node=2 main.py --cfg cfg.yaml
"""
import copy
import os
import sys

import torch
import torch.nn as nn

from common.checkpoint import load_checkpoint, load_state_dict, save_checkpoint
from common.config import parse_cli
from common.data import set_epoch
from common.dist import wrap_ddp
from common.errors import CheckpointError, ConfigError, guard
from common.runner import setup_run

import engine
import models
from convert import convert_to_dbb, deploy
from dyrep import DyRep, param_groups
from recal_bn import recal_bn

DEFAULTS = {
    'output_dir': 'output/dyrep', 'seed': 42, 'device': 'auto', 'resume': True,
    'data': {'name': 'synthetic', 'root': None, 'image_size': 32, 'num_classes': 10, 'train_size': 1000,
             'test_size': 500, 'num_workers': 0},
    'model': 'resnet20',
    'image_size': 32,             # train crop / eval size fed to the network
    'batch_size': 32, 'eval_batch_size': 250, 'epochs': 8,
    # optimisation (official strategy keys)
    'opt': 'sgd', 'lr': 0.05, 'sched': 'cosine', 'min_lr': 1e-6, 'warmup_epochs': 0, 'warmup_lr': 1e-6,
    'momentum': 0.9, 'weight_decay': 1e-4, 'opt_no_filter': True, 'sgd_no_nesterov': True,
    'smoothing': 0.0, 'clip_grad_norm': 0.0, 'amp': False,
    # augmentation
    'cutout_length': 0, 'color_jitter': 0.0, 'reprob': 0.0,
    # DyRep
    'dyrep': True, 'dyrep_adjust_interval': 1, 'dyrep_max_adjust_epochs': 7, 'dyrep_recal_bn_iters': 20,
    'dyrep_recal_bn_every_epoch': False, 'dyrep_grow_metric': 'synflow', 'dyrep_branches': [1, 1, 1, 1, 1, 1, 1],
    'dyrep_grow_topk': 1, 'dyrep_cut_threshold': 0.1, 'dyrep_cut_std_threshold': 0.02,
    # plain DBB baseline: every 3x3 conv -> DBB[1,1,1,1,0,0,0] from the start
    'dbb': False, 'dbb_branches': [1, 1, 1, 1, 0, 0, 0],
    # deployment: after training (and with --deploy, from `deploy_from` or output_dir/last.pth)
    'deploy': True, 'deploy_only': False, 'deploy_from': '',
}


def validate_cfg(cfg):
    def need(ok, key, msg):
        if not ok:
            raise ConfigError(f"config key '{key}' {msg} (got {cfg[key]!r})")

    need(cfg.model in models.MODELS, 'model', f'must be one of {sorted(models.MODELS)}')
    need(cfg.opt == 'sgd', 'opt', "must be 'sgd' (the optimizer of every DyRep recipe)")
    need(cfg.sched == 'cosine', 'sched', "must be 'cosine' (per-iteration, as in every DyRep recipe)")
    for key in ('batch_size', 'eval_batch_size', 'epochs', 'image_size'):
        need(cfg[key] > 0, key, 'must be > 0')
    for key in ('lr', 'min_lr', 'warmup_lr', 'momentum', 'weight_decay', 'clip_grad_norm', 'color_jitter'):
        need(cfg[key] >= 0, key, 'must be >= 0')
    need(cfg.warmup_epochs >= 0, 'warmup_epochs', 'must be >= 0')
    need(0 <= cfg.smoothing < 1, 'smoothing', 'must be in [0, 1)')
    need(0 <= cfg.reprob <= 1, 'reprob', 'must be in [0, 1]')
    need(cfg.cutout_length >= 0, 'cutout_length', 'must be >= 0')
    need(cfg.dyrep_adjust_interval > 0, 'dyrep_adjust_interval', 'must be > 0')
    need(cfg.dyrep_recal_bn_iters >= 0, 'dyrep_recal_bn_iters', 'must be >= 0')
    need(cfg.dyrep_grow_metric in ('synflow', 'grad_norm', 'snip', 'random'), 'dyrep_grow_metric',
         "must be one of synflow, grad_norm, snip, random")
    need(cfg.dyrep_grow_topk >= 0, 'dyrep_grow_topk', 'must be >= 0')
    for key in ('dyrep_branches', 'dbb_branches'):
        need(len(cfg[key]) == 7 and all(v in (0, 1) for v in cfg[key]) and cfg[key][3] == 1, key,
             'must be 7 flags of 0/1 [1x1, 1x1_kxk, 1x1_avg, kxk, 1xk, kx1, id] with kxk (index 3) = 1')
    need(not (cfg.dyrep and cfg.dbb), 'dbb', 'cannot be combined with dyrep: true (choose one)')
    need(not cfg.amp or cfg.device != 'cpu', 'amp', 'needs CUDA')


def build_model(cfg, num_classes):
    model = models.build_model(cfg.model, num_classes)
    if cfg.dbb:
        convert_to_dbb(model, dbb_branches=list(cfg.dbb_branches))
    return model


def build_optimizer(cfg, model):
    """SGD over name-sorted parameter lists: [no-decay, decay] when biases/BN are filtered, else one group."""
    filtered = not cfg.opt_no_filter and cfg.weight_decay > 0
    groups = param_groups(model, filtered)
    if filtered:
        groups = [{'params': groups[0], 'weight_decay': 0.0}, {'params': groups[1]}]
    else:
        groups = [{'params': groups[0]}]
    opt = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                          nesterov=not cfg.sgd_no_nesterov and cfg.momentum > 0)
    return opt, filtered


def count_params(model):
    return sum(p.numel() for p in model.parameters())


def load_training_checkpoint(path, model, dyrep_obj=None):
    """Rebuild the DBB graph stored with a checkpoint, then load its weights (strict)."""
    state = load_checkpoint(path)
    if not isinstance(state, dict) or 'model' not in state:
        raise CheckpointError(f"'{path}' has no 'model' entry: not a checkpoint of this program")
    if 'dyrep' in state and state['dyrep']:
        holder = dyrep_obj if dyrep_obj is not None else DyRep(model, None)
        holder.load_state_dict(state['dyrep'])
    load_state_dict(model, state['model'], strict=True, what='model')
    return state


def deploy_and_compare(run, cfg, model, test_loader, num_classes, train_metrics=None):
    """Evaluate ``model``, fuse a copy into the base architecture, evaluate again and compare."""
    device = run.device
    train_metrics, logits = engine.evaluate(model, test_loader, device, return_logits=True)
    deployed = deploy(copy.deepcopy(model).eval())
    dep_metrics, dep_logits = engine.evaluate(deployed, test_loader, device, return_logits=True)
    max_diff = (logits - dep_logits).abs().max().item()
    base = models.build_model(cfg.model, num_classes)
    strict_ok = True
    try:
        base.load_state_dict(deployed.state_dict(), strict=True)
    except RuntimeError:
        strict_ok = False
    n_dep, n_base = count_params(deployed), count_params(base)
    rep = deployed.deploy_report
    run.log(f"deploy: fused {len(rep['fused'])} blocks, biases folded into BN: {len(rep['bias_folded'])}, "
            f"BNs restored: {len(rep['bn_restored'])}; params {n_dep:,} (base {cfg.model}: {n_base:,}); "
            f"loads into the base model with strict=True: {strict_ok}")
    run.log(f"deploy: top-1 training form {train_metrics['top1']:.2f}% vs deployed {dep_metrics['top1']:.2f}%, "
            f"max |logit difference| {max_diff:.2e} (logits up to {logits.abs().max().item():.1f})")
    if run.is_main:
        save_checkpoint({'model': deployed.state_dict(), 'arch': cfg.model, 'num_classes': num_classes,
                         'top1': dep_metrics['top1']}, os.path.join(run.output_dir, 'deploy.pth'))
    return {'top1': train_metrics['top1'], 'deploy_top1': dep_metrics['top1'], 'deploy_max_logit_diff': max_diff,
            'deploy_params': n_dep, 'base_params': n_base, 'deploy_loads_into_base': strict_ok}


def _split_argv(argv):
    """``--deploy`` and ``--resume PATH`` (the official convert command line) become config overrides."""
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = []
    if '--deploy' in argv:
        argv.remove('--deploy')
        extra.append('deploy_only=true')
    if '--resume' in argv:
        i = argv.index('--resume')
        if i + 1 >= len(argv):
            raise ConfigError('--resume needs a checkpoint path')
        extra.append(f'deploy_from={argv[i + 1]}')
        del argv[i:i + 2]
    if extra:
        if '--opts' in argv:
            argv[argv.index('--opts') + 1:argv.index('--opts') + 1] = extra
        else:
            argv += ['--opts'] + extra
    return argv


def main_deploy(run, cfg):
    _, test_loader, num_classes = engine.build_data(cfg)
    model = build_model(cfg, num_classes).to(run.device)
    path = cfg.deploy_from or run.last_path
    load_training_checkpoint(path, model)
    run.log(f'loaded {path}: {count_params(model):,} parameters in training form')
    res = deploy_and_compare(run, cfg, model, test_loader, num_classes)
    run.log_metrics({'deploy_from': path, **res})
    return run.finish(f"DyRep deploy: top-1 {res['top1']:.2f}% (training form) -> {res['deploy_top1']:.2f}% "
                      f"(deployed, {res['deploy_params']:,} params = base {res['base_params']:,}; "
                      f"max |logit diff| {res['deploy_max_logit_diff']:.1e})")


def main(argv=None):
    cfg = parse_cli(DEFAULTS, _split_argv(argv), description='DyRep: dynamic re-parameterization')
    validate_cfg(cfg)
    run = setup_run(cfg)
    if cfg.deploy_only:
        return main_deploy(run, cfg)
    device = run.device
    train_loader, test_loader, num_classes = engine.build_data(cfg)
    model = build_model(cfg, num_classes).to(device)
    base_params = count_params(models.build_model(cfg.model, num_classes))
    optimizer, filtered = build_optimizer(cfg, model)
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.smoothing)
    scaler = torch.amp.GradScaler('cuda') if run.amp else None

    dyrep = None
    if cfg.dyrep:
        def recal_fn(block):
            recal_bn(model, train_loader, cfg.dyrep_recal_bn_iters, block)
        dyrep = DyRep(model, optimizer, recal_bn_fn=recal_fn if cfg.dyrep_recal_bn_iters > 0 else None,
                      grow_metric=cfg.dyrep_grow_metric, dbb_branches=list(cfg.dyrep_branches),
                      filter_bias_and_bn=filtered, grow_topk=cfg.dyrep_grow_topk,
                      cut_threshold=cfg.dyrep_cut_threshold, cut_std_threshold=cfg.dyrep_cut_std_threshold)

    # resume: the DBB graph must be rebuilt before the weights and the optimizer state are loaded
    history = {'grown': [], 'cut': []}
    best = 0.0
    if cfg.resume and os.path.isfile(run.last_path):
        peek = load_checkpoint(run.last_path)
        if dyrep is not None and isinstance(peek, dict) and peek.get('dyrep'):
            dyrep.load_state_dict(peek['dyrep'])
        del peek
    state = run.resume(model=model, optimizer=optimizer, scaler=scaler)
    if state is not None:
        history = state.get('history', history)
        best = state.get('best_top1', 0.0)
    run.log(f'model {cfg.model}: {count_params(model):,} parameters (base {base_params:,}), '
            f"{'DyRep' if dyrep else 'DBB baseline' if cfg.dbb else 'plain'} training, {cfg.epochs} epochs")
    ddp_kwargs = {'find_unused_parameters': True} if dyrep is not None else {}
    net = wrap_ddp(model, device, **ddp_kwargs)

    metrics = {}
    for epoch in range(run.start_epoch, cfg.epochs):
        set_epoch(train_loader, epoch)
        train_stats = engine.train_one_epoch(cfg, epoch, net, train_loader, optimizer, criterion, device,
                                             dyrep=dyrep, scaler=scaler)
        metrics = engine.evaluate(model, test_loader, device)
        event = {}
        if dyrep is not None and epoch < cfg.dyrep_max_adjust_epochs:
            if (epoch + 1) % cfg.dyrep_adjust_interval == 0:
                report = dyrep.adjust_model()
                event = {'top1_before_adjust': metrics['top1'], 'grown': report['grown'],
                         'cut': [(n, k) for n, _, k in report['cut']]}
                history['grown'] += [(epoch, n) for n in report['grown']]
                history['cut'] += [(epoch, n, k) for n, _, k in report['cut']]
                top = ', '.join(f'{n}={v:.3g}' for n, v in report['metric'][:3])
                run.log(f'DyRep adjust (epoch {epoch}): metric top-3 [{top}]')
                for n in report['grown']:
                    gone = ' (removed again: its parent branch was cut below)' if n in report['removed'] else ''
                    run.log(f"  grew   {n} -> DBB {report['grown_branches'][n]}{gone}")
                for n, w in report['branch_weights'].items():
                    run.log(f'  weights {n}: {[round(v, 3) for v in w]}')
                for n, w, keep in report['cut']:
                    run.log(f'  cut    {n}: branch weights {[round(v, 3) for v in w]} -> branches {keep}')
                if not report['cut']:
                    run.log('  cut    nothing (no block has a branch weight spread > '
                            f'{cfg.dyrep_cut_std_threshold} with weights < {cfg.dyrep_cut_threshold})')
                net = wrap_ddp(model, device, **ddp_kwargs)
                metrics = engine.evaluate(model, test_loader, device)
            elif cfg.dyrep_recal_bn_every_epoch:
                recal_bn(model, train_loader, 200)
                metrics = engine.evaluate(model, test_loader, device)
        n_params = count_params(model)
        best = max(best, metrics['top1'])
        run.log_metrics({'epoch': epoch, **train_stats, **metrics, 'params': n_params, **event})
        run.save({'model': model.state_dict(), 'optimizer': optimizer.state_dict(),
                  'scaler': scaler.state_dict() if scaler is not None else None,
                  'dyrep': dyrep.state_dict() if dyrep is not None else None, 'epoch': epoch + 1,
                  'history': history, 'best_top1': best}, is_best=metrics['top1'] >= best)

    if not metrics:
        metrics = engine.evaluate(model, test_loader, device)
    grown = [n for _, n in history['grown']]
    cut = [f'{n}{k}' for _, n, k in history['cut']]
    run.log(f'DyRep summary: grew {len(grown)} convs {grown}; cuts {len(cut)} {cut}')
    if not cfg.deploy:
        return run.finish(f"top-1 ({cfg.data.name} test): {metrics['top1']:.2f}%")
    res = deploy_and_compare(run, cfg, model, test_loader, num_classes)
    run.log_metrics({'final': True, **res, 'grown': grown, 'cut': cut})
    mode = 'DyRep' if dyrep is not None else 'DBB' if cfg.dbb else 'Plain'
    return run.finish(f"{mode} top-1 ({cfg.data.name} test): {res['top1']:.2f}% training form, "
                      f"{res['deploy_top1']:.2f}% deployed ({res['deploy_params']:,} params = base "
                      f"{res['base_params']:,}; max |logit diff| {res['deploy_max_logit_diff']:.1e}); "
                      f"grew {len(grown)}, cut {len(cut)}")


if __name__ == '__main__':
    guard(main)
