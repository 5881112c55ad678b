"""CafeNet width search: train a locally-free-weight-sharing supernet (min-min), search widths, retrain.

    python main.py --cfg cfg.yaml [--opts key=value ...]

Stages (``stages``, run in this order): ``supernet`` (train the supernet with the stochastic min-min step),
``score_cbm`` (score Channel-Bench-Macro archs with the supernet and correlate with the benchmark), ``search``
(evolutionary search under a FLOPs budget; evaluator: the supernet, best of a width's placements, or the
benchmark table), ``retrain`` (train the found widths from scratch, contiguous layout). A killed run resumes
from ``output_dir/last.pth``.
"""
import json
import os

import numpy as np
import torch
import torch.nn as nn

from common.checkpoint import load_checkpoint, load_state_dict
from common.config import parse_cli
from common.data import num_classes as dataset_classes
from common.data import set_epoch
from common.dist import wrap_ddp
from common.errors import CheckpointError, ConfigError, guard
from common.log import progress
from common.runner import setup_run

import engine
from benchmark import ChannelBenchMacro
from bins import FALLBACKS
from evaluator import BenchmarkEvaluator, SupernetEvaluator, accuracy
from metrics import kendall_tau_b, pearson, spearman
from models.cbm import build_cbm
from models.imagenet import MBV2_SETTINGS, mobilenetv2_channels, mobilenetv2_from_channels, \
    resnet50_channels, resnet50_from_channels
from sampler import CafeNetSampler
from searcher import CafeNetSearcher
from supernet import CafeSupernet
from trainer import CafeNetTrainer

STAGES = ('supernet', 'score_cbm', 'search', 'retrain')
MODELS = ('cbm_mobilenet', 'cbm_resnet', 'mobilenetv2', 'resnet50')
BINS = ('uniform', 'flops')

_TRAIN = {'epochs': 60, 'batch_size': 256, 'lr': 0.1, 'momentum': 0.9, 'nesterov': True, 'weight_decay': 5e-4,
          'min_lr': 1e-5, 'warmup_epochs': 0, 'warmup_lr': 1e-3, 'label_smoothing': 0.0,
          'max_iters_per_epoch': 0}

DEFAULTS = {
    'output_dir': 'output/cafenet', 'seed': 42, 'device': 'auto', 'amp': False, 'resume': True,
    'stages': ['supernet', 'search'],
    'init_ckpt': '',                # a supernet checkpoint (last.pth of a supernet run) to start from
    'data': {'name': 'synthetic', 'root': None, 'image_size': 32, 'num_classes': 10, 'train_size': 2000,
             'test_size': 500, 'num_workers': 0, 'augment': 'cifar', 'val_split': 0.1},
    'model': {'name': 'cbm_mobilenet', 'width_mult': 1.0, 'backbone': {}},
    'cafenet': {'bins': 'uniform', 'num_bins': 4, 'min_bin': 1, 'max_bin': 32, 'bin_fallback': 'error',
                'r': 1, 'num_candidates': 2},
    'train': dict(_TRAIN, eval_recal_batches=20),
    'search': {'evaluator': 'supernet', 'flops_limit': 0.0, 'flops_ratio': 0.5, 'flops_min_ratio': 0.8,
               'max_epoch': 40, 'population_num': 50, 'top_k_num': 10, 'mutation_num': 25, 'mutation_prob': 0.1,
               'crossover_num': 25, 'eval_placements': 4, 'recal_batches': 20, 'val_batches': 0},
    'score_cbm': {'limit': 0, 'exclude_width1': False},
    'benchmark': {'path': '../../shared/data/channel-bench-macro_mobilenet_cifar10.json'},
    'retrain': dict(_TRAIN, widths=[]),
}


# ----------------------------------------------------------------------------------------------- config
def _check(cond, key, msg):
    if not cond:
        raise ConfigError(f'{key}: {msg}')


def validate(cfg):
    stages = list(cfg.stages)
    _check(stages and all(s in STAGES for s in stages), 'stages', f'a non-empty list from {STAGES}, got {stages}')
    _check(cfg.model.name in MODELS, 'model.name', f'one of {MODELS}, got {cfg.model.name!r}')
    _check(cfg.model.width_mult > 0, 'model.width_mult', 'must be > 0')
    _check(cfg.data.augment in engine.AUGMENTS, 'data.augment', f'one of {engine.AUGMENTS}')
    _check(cfg.data.image_size >= 8, 'data.image_size', 'must be >= 8')
    _check(0 <= cfg.data.val_split < 1, 'data.val_split', 'must be in [0, 1)')
    c = cfg.cafenet
    _check(c.bins in BINS, 'cafenet.bins', f'one of {BINS}, got {c.bins!r}')
    _check(c.num_bins >= 1, 'cafenet.num_bins', 'must be >= 1')
    _check(1 <= c.min_bin <= c.max_bin, 'cafenet.min_bin', 'need 1 <= min_bin <= max_bin')
    _check(c.bin_fallback in FALLBACKS, 'cafenet.bin_fallback', f'one of {FALLBACKS}')
    _check(c.r >= 0, 'cafenet.r', 'must be >= 0 (0 = the fixed pattern)')
    _check(c.num_candidates >= 1, 'cafenet.num_candidates', 'must be >= 1')
    for sec in ('train', 'retrain'):
        t = cfg[sec]
        _check(t.epochs >= 0, f'{sec}.epochs', 'must be >= 0')
        _check(t.batch_size >= 1, f'{sec}.batch_size', 'must be >= 1')
        _check(t.lr > 0, f'{sec}.lr', 'must be > 0')
        _check(0 <= t.momentum < 1, f'{sec}.momentum', 'must be in [0, 1)')
        _check(t.weight_decay >= 0, f'{sec}.weight_decay', 'must be >= 0')
        _check(0 <= t.warmup_epochs <= max(t.epochs, 0), f'{sec}.warmup_epochs', 'must be in [0, epochs]')
        _check(0 <= t.label_smoothing < 1, f'{sec}.label_smoothing', 'must be in [0, 1)')
    s = cfg.search
    _check(s.evaluator in ('supernet', 'benchmark'), 'search.evaluator', "'supernet' or 'benchmark'")
    _check(s.flops_limit >= 0, 'search.flops_limit', 'must be >= 0 (MACs; 0 = flops_ratio of full width)')
    _check(0 < s.flops_ratio <= 1, 'search.flops_ratio', 'must be in (0, 1]')
    _check(0 <= s.flops_min_ratio < 1, 'search.flops_min_ratio', 'must be in [0, 1)')
    for k in ('max_epoch', 'population_num', 'top_k_num', 'recal_batches', 'eval_placements'):
        _check(s[k] >= 1, f'search.{k}', 'must be >= 1')
    for k in ('mutation_num', 'crossover_num', 'val_batches'):
        _check(s[k] >= 0, f'search.{k}', 'must be >= 0')
    _check(0 <= s.mutation_prob <= 1, 'search.mutation_prob', 'must be in [0, 1]')
    uses_bench = 'score_cbm' in stages or ('search' in stages and s.evaluator == 'benchmark')
    if uses_bench:
        _check(_cbm_shape_ok(cfg), 'search.evaluator',
               'the Channel-Bench-Macro table needs model.name cbm_mobilenet|cbm_resnet, model.width_mult 1, '
               'cafenet.bins uniform, cafenet.num_bins 4 and data.image_size 32')
        path = engine.resolve_path(cfg.benchmark.path)
        _check(os.path.isfile(path), 'benchmark.path', f"file '{path}' not found (the Channel-Bench-Macro JSON "
               f"of the model's space, e.g. Results_MobileNet.json of xiusu/Channel-Bench-Macro)")
    return uses_bench


def _cbm_shape_ok(cfg):
    return (cfg.model.name.startswith('cbm_') and cfg.model.width_mult == 1.0 and cfg.cafenet.bins == 'uniform'
            and cfg.cafenet.num_bins == 4 and cfg.data.image_size == 32)


def _cbm_lookup_ok(cfg):
    return _cbm_shape_ok(cfg) and cfg.data.name == 'cifar10' and os.path.isfile(engine.resolve_path(cfg.benchmark.path))


# ----------------------------------------------------------------------------------------------- model
def build_model(cfg, n_classes):
    m = cfg.model
    if m.name.startswith('cbm_'):
        return build_cbm(m.name[4:], '4444444', n_classes, m.width_mult)
    if m.name == 'mobilenetv2':
        bb = dict(m.backbone)
        bad = set(bb) - {'stem', 'settings', 'last'}
        _check(not bad, 'model.backbone', f'unknown keys {sorted(bad)} (valid: stem, settings, last)')
        if 'settings' in bb:
            bb['settings'] = [tuple(r) for r in bb['settings']]
        return mobilenetv2_from_channels(mobilenetv2_channels(m.width_mult, **bb), n_classes,
                                         settings=bb.get('settings', MBV2_SETTINGS))
    return resnet50_from_channels(resnet50_channels(m.width_mult), n_classes)


def build_supernet(cfg, n_classes):
    c = cfg.cafenet
    size = cfg.data.image_size
    model = build_model(cfg, n_classes)
    try:
        if c.bins == 'flops':
            return CafeSupernet(model, 'flops', c.r, (3, size, size), c.min_bin, c.max_bin, c.bin_fallback)
        sn = CafeSupernet(model, 1, c.r, (3, size, size))
        bad = [C for C in sn.slot_channels if C % c.num_bins]
        _check(not bad, 'cafenet.num_bins', f'{c.num_bins} bins do not divide the slot widths {bad}')
        return CafeSupernet(sn.model, [C // c.num_bins for C in sn.slot_channels], c.r, (3, size, size))
    except ValueError as e:
        raise ConfigError(f'cafenet.bins: {e}') from None


def arch_string(widths):
    return ''.join(str(int(c)) for c in widths) if max(widths) <= 9 else str([int(c) for c in widths])


def _reinit(net):
    for mod in net.modules():
        if hasattr(mod, 'reset_parameters') and mod is not net:
            mod.reset_parameters()
    return net


# ----------------------------------------------------------------------------------------------- main
def main(argv=None):
    cfg = parse_cli(DEFAULTS, argv, description='CafeNet width search')
    uses_bench = validate(cfg)
    run = setup_run(cfg)
    dev = run.device
    torch.backends.cudnn.benchmark = dev.type == 'cuda'
    n_cls = dataset_classes(cfg.data.name, num_classes=cfg.data.num_classes, root=cfg.data.root)
    bench = ChannelBenchMacro(engine.resolve_path(cfg.benchmark.path), cfg.model.name[4:]) if uses_bench else None

    c = cfg.cafenet
    supernet = build_supernet(cfg, n_cls).to(dev)
    full = supernet.full_widths()
    full_macs = supernet.flops(full)
    run.log(f'supernet: {supernet.num_slots} slots of {supernet.slot_channels} channels, bin sizes '
            f'{supernet.bin_sizes} ({c.bins}), units {supernet.num_units}, r={c.r}, K={c.num_candidates}; '
            f'full width {full_macs / 1e6:.2f}M MACs, {supernet.params(full) / 1e6:.3f}M params')

    sampler = CafeNetSampler(supernet.num_units, c.r, rng=cfg.seed)   # same seed on every rank
    s = cfg.search
    limit = s.flops_limit if s.flops_limit > 0 else s.flops_ratio * full_macs
    searcher_kwargs = dict(max_epoch=s.max_epoch, population_num=s.population_num, top_k_num=s.top_k_num,
                           mutation_num=s.mutation_num, mutation_prob=s.mutation_prob,
                           crossover_num=s.crossover_num, flops_limit=limit, eval_placements=s.eval_placements,
                           flops_min_ratio=s.flops_min_ratio, seed=cfg.seed)
    searcher = CafeNetSearcher(**searcher_kwargs)
    t = cfg.train
    optimizer = engine.build_optimizer(supernet, t)
    scaler = torch.amp.GradScaler('cuda') if run.amp else None
    trainer = CafeNetTrainer(c.num_candidates, sampler, nn.CrossEntropyLoss(label_smoothing=t.label_smoothing),
                             'supernet', scaler, torch.float16 if run.amp else None)

    if cfg.init_ckpt:
        init = load_checkpoint(cfg.init_ckpt)
        if 'model' not in init:
            raise CheckpointError(f"'{cfg.init_ckpt}' has no 'model' entry")
        load_state_dict(supernet.model, init['model'], strict=True, what='supernet')
        run.log(f'initialised the supernet from {cfg.init_ckpt}')

    state = run.resume(model=supernet.model, optimizer=optimizer, sampler=sampler)
    st = {'trainer_iteration': 0, 'search': None, 'result': None, 'retrain': None, 'cbm': None}
    if state is not None:
        for k in st:
            st[k] = state.get(k, st[k])
        trainer.iteration = st['trainer_iteration']
        if st['search'] is not None:
            searcher.load_state_dict(st['search'])

    def save(epoch, is_best=False):
        st['trainer_iteration'] = trainer.iteration
        run.save({'epoch': epoch, 'model': supernet.model.state_dict(), 'optimizer': optimizer.state_dict(),
                  'sampler': sampler.state_dict(), **st}, is_best=is_best)

    loaders = engine.build_data(cfg, t.batch_size, cfg.seed)
    score_split = f'{cfg.data.name} held-out train split' if cfg.data.val_split > 0 else f'{cfg.data.name} test'
    epoch = run.start_epoch
    headline = None

    # ------------------------------------------------------------------ stage: supernet
    if 'supernet' in cfg.stages and epoch < t.epochs:
        model = wrap_ddp(supernet, dev)
        for epoch in range(run.start_epoch, t.epochs):
            set_epoch(loaders['train'], epoch)
            scored0, gap0 = trainer.scored_steps, trainer.gap_sum
            loss, lr = engine.train_epoch(model, trainer, optimizer, loaders['train'], epoch, t, dev, scaler)
            n_scored = trainer.scored_steps - scored0
            metrics = {'stage': 'supernet', 'epoch': epoch + 1, 'loss': loss, 'lr': lr, 'min_min_steps': n_scored,
                       'candidate_loss_gap': (trainer.gap_sum - gap0) / max(n_scored, 1)}
            if epoch + 1 == t.epochs:   # the widest and narrowest sub-networks after BN recalibration
                ev = SupernetEvaluator(supernet, loaders['recal'], loaders['val'], dev, t.eval_recal_batches)
                metrics['max_width_top1'] = ev(full)
                metrics['min_width_top1'] = max(ev([1] * supernet.num_slots, p)
                                                for p in supernet.eval_placements([1] * supernet.num_slots,
                                                                                  s.eval_placements, cfg.seed))
                ev.restore()
            if st['result'] is not None or st['search'] is not None:   # a longer supernet run: search anew
                st.update(search=None, result=None, retrain=None)
                searcher = CafeNetSearcher(**searcher_kwargs)
            run.log_metrics(metrics)
            save(epoch + 1)
        epoch = t.epochs
        headline = (f"CafeNet supernet: loss {metrics['loss']:.3f}, top-1 max width {metrics['max_width_top1']:.2f}% "
                    f"/ min width {metrics['min_width_top1']:.2f}% ({score_split})"
                    if 'max_width_top1' in metrics else f"CafeNet supernet: loss {metrics['loss']:.3f}")
        supernet.reset()

    # ------------------------------------------------------------------ stage: score_cbm
    if 'score_cbm' in cfg.stages:
        headline = score_cbm(cfg, run, supernet, bench, loaders, st, save, epoch)

    # ------------------------------------------------------------------ stage: search
    if 'search' in cfg.stages:
        if st['result'] is None:
            if s.evaluator == 'benchmark':
                evaluator, placements_fn = BenchmarkEvaluator(bench), None
            else:
                evaluator = SupernetEvaluator(supernet, loaders['recal'], loaders['val'], dev, s.recal_batches,
                                              s.val_batches or None)
                placements_fn = supernet.eval_placements
            run.log(f'search: FLOPs window [{s.flops_min_ratio * limit / 1e6:.2f}M, {limit / 1e6:.2f}M] MACs, '
                    f'evaluator {s.evaluator}' + (f', best of {s.eval_placements} placements per width'
                                                  if placements_fn else ''))
            bar = progress(range(s.max_epoch), total=s.max_epoch, desc='search')
            if hasattr(bar, 'update') and searcher.epoch:
                bar.update(searcher.epoch)

            def on_epoch(srch):
                e, best, score, n = srch.history[-1]
                run.log_metrics({'stage': 'search', 'search_epoch': e, 'best': arch_string(best),
                                 'best_score': score, 'evaluated': n})
                st['search'] = srch.state_dict()
                if isinstance(evaluator, SupernetEvaluator):
                    evaluator.restore()   # checkpoint the training-time BN statistics
                save(epoch)
                if hasattr(bar, 'update'):
                    bar.update(1)

            result = searcher.search(supernet.num_units, evaluator, supernet.flops, placements_fn, callback=on_epoch)
            if isinstance(evaluator, SupernetEvaluator):
                evaluator.restore()
            if result['best'] is None:
                raise ConfigError(f'search.flops_limit: no width vector has FLOPs in [{s.flops_min_ratio} * '
                                  f'{limit:.4g}, {limit:.4g}] MACs')
            w = result['best']
            result.update(macs=supernet.flops(w), params=supernet.params(w), channels=supernet.channels(w),
                          slot_channels=[u * b for u, b in zip(w, supernet.bin_sizes)], flops_limit=limit)
            if bench is not None or _cbm_lookup_ok(cfg):
                bench = bench or ChannelBenchMacro(engine.resolve_path(cfg.benchmark.path), cfg.model.name[4:])
                result.update(benchmark_mean=bench.mean(w), benchmark_rank=bench.rank(w))
            st['result'] = result
            save(epoch)
            if run.is_main:
                with open(os.path.join(run.output_dir, 'search_result.json'), 'w') as f:
                    json.dump(result, f, indent=1)
        r = st['result']
        run.log_metrics({'stage': 'search', 'best': arch_string(r['best']), 'score': r['score'],
                         'macs': r['macs'], 'params': r['params'], 'evaluated': r['evaluated']})
        run.log(f"found widths {r['best']} (units) = {r['slot_channels']} channels per slot; best placement "
                f"{r['placement']}; channels per conv {r['channels']}")
        headline = (f"CafeNet search ({s.evaluator} evaluator, FLOPs <= {r['flops_limit'] / 1e6:.2f}M): widths "
                    f"{arch_string(r['best'])} = {r['slot_channels']} channels, {r['macs'] / 1e6:.2f}M MACs, "
                    f"{r['params'] / 1e6:.3f}M params, score {r['score']:.2f}%"
                    + (f' (best-placement top-1, {score_split})' if s.evaluator == 'supernet'
                       else ' (Channel-Bench-Macro mean accuracy)'))
        if 'benchmark_rank' in r:
            headline += f"; Channel-Bench-Macro: {r['benchmark_mean']:.2f}% rank {r['benchmark_rank']}/16384"

    # ------------------------------------------------------------------ stage: retrain
    if 'retrain' in cfg.stages:
        headline = retrain(cfg, run, supernet, st, save, epoch)

    if headline is None:
        headline = 'CafeNet: nothing to do (all stages already done)'
    run.finish(headline)
    return st


def score_cbm(cfg, run, supernet, bench, loaders, st, save, epoch):
    """Score Channel-Bench-Macro archs with the supernet (best of ``eval_placements`` placements) and
    correlate with the benchmark."""
    keys = [k for k in bench.keys if k != '4444444']
    if cfg.score_cbm.limit > 0:
        rng = np.random.default_rng(cfg.seed)
        keys = sorted(rng.choice(keys, size=min(cfg.score_cbm.limit, len(keys)), replace=False).tolist())
    scores = dict(st['cbm'] or {})
    ev = SupernetEvaluator(supernet, loaders['recal'], loaders['val'], run.device, cfg.search.recal_batches,
                           cfg.search.val_batches or None)
    rng = np.random.default_rng(cfg.seed + 1)
    todo = [k for k in keys if k not in scores]
    for i, k in enumerate(progress(todo, total=len(todo), desc='score_cbm')):
        w = [int(a) for a in k]
        scores[k] = max(ev(w, p) for p in supernet.eval_placements(w, cfg.search.eval_placements, rng))
        if (i + 1) % 200 == 0 or i + 1 == len(todo):
            st['cbm'] = scores
            ev.restore()
            save(epoch)
    ev.restore()
    if run.is_main:
        with open(os.path.join(run.output_dir, 'cbm_scores.json'), 'w') as f:
            json.dump({'Result': [{'Num': i + 1, 'subnet': int(k), 'score': scores[k]}
                                  for i, k in enumerate(sorted(scores))]}, f)
    ks = sorted(scores)
    if cfg.score_cbm.exclude_width1:
        ks = [k for k in ks if '1' not in k]
    x = np.array([scores[k] for k in ks])
    y = np.array([bench.mean(k) for k in ks])
    corr = {'pearson': pearson(x, y), 'spearman': spearman(x, y), 'kendall_tau_b': kendall_tau_b(x, y)}
    run.log_metrics({'stage': 'score_cbm', 'archs': len(ks), **corr})
    return (f"CafeNet supernet ranking on Channel-Bench-Macro ({len(ks)} archs): Pearson {corr['pearson']:.3f}, "
            f"Spearman {corr['spearman']:.3f}, Kendall tau-b {corr['kendall_tau_b']:.3f}")


def retrain(cfg, run, supernet, st, save, epoch):
    """Train the found widths from scratch as a plain contiguous network; report the best test top-1."""
    r = cfg.retrain
    widths = list(r.widths) or (st['result'] or {}).get('best')
    if not widths:
        raise ConfigError('retrain.widths: give the widths to retrain (or run the search stage first)')
    if len(widths) != supernet.num_slots:
        raise ConfigError(f'retrain.widths: need {supernet.num_slots} widths, got {len(widths)}')
    bad = [(l, int(w)) for l, (w, n) in enumerate(zip(widths, supernet.num_units)) if not 1 <= int(w) <= n]
    _check(not bad, 'retrain.widths', f'(slot, width) {bad} outside [1, units of the slot] = {supernet.num_units}')
    widths = [int(w) for w in widths]
    dev = run.device
    net = _reinit(supernet.export(widths, None))
    supernet.reset()
    net.to(dev)
    opt = engine.build_optimizer(net, r)
    rs = st['retrain'] or {'epoch': 0, 'best': 0.0, 'history': []}
    if st['retrain'] is not None:
        net.load_state_dict(rs['model'])
        opt.load_state_dict(rs['optimizer'])
    loaders = engine.build_data(cfg, r.batch_size, cfg.seed + 17, holdout=False)
    model = wrap_ddp(net, dev)
    plain = CafeNetTrainer(loss_fn=nn.CrossEntropyLoss(label_smoothing=r.label_smoothing), stage='retrain')
    for e in range(rs['epoch'], r.epochs):
        set_epoch(loaders['train'], e)
        loss, lr = engine.train_epoch(model, plain, opt, loaders['train'], e, r, dev, desc='retrain')
        top1 = accuracy(net, loaders['test'], dev)
        is_best = top1 > rs['best']
        rs.update(epoch=e + 1, best=max(rs['best'], top1), model=net.state_dict(), optimizer=opt.state_dict())
        rs['history'].append(top1)
        run.log_metrics({'stage': 'retrain', 'epoch': e + 1, 'loss': loss, 'lr': lr, 'top1': top1})
        st['retrain'] = rs
        save(epoch, is_best=is_best)
    macs, params = supernet.flops(widths), supernet.params(widths)
    last = rs['history'][-1] if rs['history'] else float('nan')
    return (f"CafeNet retrained widths {arch_string(widths)} ({macs / 1e6:.2f}M MACs, {params / 1e6:.3f}M params): "
            f"top-1 {last:.2f}% (best {rs['best']:.2f}%, {cfg.data.name} test)")


if __name__ == '__main__':
    guard(main)
