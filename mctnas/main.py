"""MCT-NAS main job: ``python main.py --cfg cfg.yaml [--opts key=value ...]``.

Stages (``stage``):
  supernet  train the single-path supernet with Monte-Carlo-tree sampling, then search it with hierarchical
            node selection and report the chosen architecture (the paper's train + search pipeline);
  search    search again from a trained supernet checkpoint (``search.checkpoint``);
  bench     no network: the tree is trained on NAS-Bench-Macro oracle losses and searched with the table as
            the evaluator (studies the search algorithm itself);
  retrain   train one architecture from scratch (the benchmark protocol on CIFAR, or MCT-NAS-A/B/C on ImageNet).
Multi-process: ``torchrun --nproc_per_node=N main.py --cfg ...`` (gloo on CPU, nccl on CUDA); rank 0 samples
the path and broadcasts it, every rank updates its own tree with its local loss, rank 0 searches.
"""
import math
import os
import random
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from common import dist
from common.checkpoint import load_checkpoint, load_state_dict, rng_state, save_checkpoint
from common.config import parse_cli
from common.data import DATASET_STATS, build_dataset, build_loader, labeled_subset, set_epoch
from common.errors import CheckpointError, ConfigError, DatasetError, guard
from common.log import AverageMeter, Throughput, progress, update_progress
from common.runner import setup_run
from common.schedule import cosine_lr, set_lr

from benchmark import NASBenchMacro
from evaluators import BenchmarkEvaluator, SupernetEvaluator
from flops import SubnetCost, count_macs, count_params
from models import imagenet as imagenet_space
from models.nas_bench_macro import MacroSupernet, Network, candidate_OP, parse_arch
from optim_tf import ModelEma, RMSpropTF, step_decay_lr
from sampler import MCTSampler
from searcher import MCTSearcher

HERE = Path(__file__).resolve().parent

DEFAULTS = {
    'output_dir': 'output/mctnas',
    'seed': 42,
    'device': 'auto',
    'resume': True,
    'amp': False,
    'stage': 'supernet',            # supernet | search | bench | retrain
    'space': 'nas_bench_macro',     # nas_bench_macro (CIFAR) | imagenet (GreedyNAS space)
    'data': {
        'name': 'synthetic',        # common.data: synthetic, cifar10, imagefolder (ImageNet), ...
        'root': None,
        'image_size': 32,
        'num_classes': 10,          # synthetic only
        'train_size': 5000,         # synthetic only
        'test_size': 1000,          # synthetic only
        'num_workers': 0,
        'test_split': 'test',       # 'val' for an ImageNet folder
        'val_per_class': 0,         # > 0: hold out this many training images per class for the search
    },
    'model': {'init_channels': 32,   # NAS-Bench-Macro supernet width (32 = the benchmark network)
              'tf_init': True},      # official NASModel init (TF style); false: PyTorch defaults
    # supernet training (official NAS-Bench-Macro config)
    'batch_size': 256,
    'epochs': 50,
    'lr': 0.1,
    'min_lr': 1e-5,
    'momentum': 0.9,
    'nesterov': True,
    'weight_decay': 5e-4,           # on weights with more than one dimension only (no BN, no bias)
    'label_smoothing': 0.0,
    'print_freq': 50,
    'mct': {                        # MCTSampler
        'warmup_iters': 4900,       # iterations before any reward bookkeeping
        'mct_start_iter': 5880,     # first iteration sampled from the tree
        'beta': 0.96, 'gamma': 0.96, 'C1': 0.1, 'C2': 0.2, 'tau': 0.0025,
        'flops_min': 0, 'flops_max': -1,  # training FLOPs window in MACs (-1: none)
        'max_times': 100,
    },
    'search': {                     # MCTSearcher
        'checkpoint': None,         # stage=search: trained supernet (default <output_dir>/last.pth)
        'evaluator': 'supernet',    # supernet | benchmark (scores read from the NAS-Bench-Macro table)
        'n_thrd': 6, 'tau': 0.0025, 'search_num': 20, 'top_k': 10,
        'flops_min': 0, 'flops_limit': -1,  # search FLOPs window in MACs (-1: none)
        'bn_batches': 20,           # BN recalibration batches before scoring a path
        'update_data_freq': 1000,   # loss evaluations per cached validation batch
        'loss_bn': 'batch',         # re-evaluation loss with batch statistics | running statistics
        'batch_size': 256,
        'random_baseline': 0,       # also score this many random paths, for comparison
    },
    'benchmark': {
        'path': '../../shared/data/nas-bench-macro_cifar10.json',
        'report': 'auto',           # look the found arch up: auto (when data is cifar10), always, never
        'iters': 9800,              # stage=bench: tree-training iterations on oracle losses
        'noise': 0.02,              # stage=bench: std of the oracle pseudo-loss noise
    },
    'retrain': {
        'arch': '',                 # NAS-Bench-Macro digits (e.g. 22212220) or 21 ImageNet indices
        'model': '',                # MCT-NAS-A | MCT-NAS-B | MCT-NAS-C (space=imagenet)
        'epochs': 50, 'batch_size': 256,
        'optimizer': 'sgd',         # sgd | rmsprop_tf
        'lr': 0.1, 'momentum': 0.9, 'nesterov': False, 'weight_decay': 5e-4, 'rmsprop_eps': 1e-3,
        'no_wd_bn_bias': False,
        'schedule': 'cosine_epoch',  # cosine_epoch (benchmark: stepped at each epoch start) | step
        'decay_epochs': 3.0, 'decay_rate': 0.963, 'warmup_epochs': 0.0, 'warmup_lr': 1e-6,
        'ema_decay': 0.0, 'label_smoothing': 0.0, 'drop_rate': 0.0, 'color_jitter': 0.0,
    },
}

STAGES = ('supernet', 'search', 'bench', 'retrain')
CIFAR10_STATS = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))  # card: the official normalisation


# --------------------------------------------------------------------------------------------- config
def _check(cond, key, msg):
    if not cond:
        raise ConfigError(f"config key '{key}' {msg}")


def validate(cfg):
    _check(cfg.stage in STAGES, 'stage', f'must be one of {", ".join(STAGES)}, got {cfg.stage!r}')
    _check(cfg.space in ('nas_bench_macro', 'imagenet'), 'space',
           f'must be nas_bench_macro or imagenet, got {cfg.space!r}')
    for key in ('batch_size', 'epochs', 'search.search_num', 'search.batch_size', 'search.n_thrd', 'search.tau',
                'mct.tau', 'mct.max_times', 'data.image_size', 'model.init_channels', 'retrain.epochs',
                'retrain.batch_size', 'print_freq', 'benchmark.iters', 'search.update_data_freq'):
        value = cfg
        for part in key.split('.'):
            value = value[part]
        _check(value > 0, key, f'must be > 0, got {value!r}')
    for key in ('lr', 'min_lr', 'momentum', 'weight_decay', 'label_smoothing', 'mct.warmup_iters',
                'mct.C1', 'mct.C2', 'search.bn_batches', 'search.random_baseline', 'benchmark.noise',
                'retrain.lr', 'retrain.weight_decay', 'retrain.ema_decay', 'retrain.drop_rate',
                'data.val_per_class'):
        value = cfg
        for part in key.split('.'):
            value = value[part]
        _check(value >= 0, key, f'must be >= 0, got {value!r}')
    _check(cfg.mct.mct_start_iter >= cfg.mct.warmup_iters, 'mct.mct_start_iter',
           f'must be >= mct.warmup_iters ({cfg.mct.warmup_iters}): the tree needs its uniform building phase')
    for key in ('mct.beta', 'mct.gamma'):
        _check(0 <= cfg.mct[key.split('.')[1]] < 1, key, 'must lie in [0, 1)')
    _check(cfg.search.evaluator in ('supernet', 'benchmark'), 'search.evaluator',
           f'must be supernet or benchmark, got {cfg.search.evaluator!r}')
    _check(cfg.search.loss_bn in ('batch', 'running'), 'search.loss_bn', 'must be batch or running')
    _check(cfg.benchmark.report in ('auto', 'always', 'never'), 'benchmark.report', 'must be auto, always or never')
    _check(cfg.retrain.optimizer in ('sgd', 'rmsprop_tf'), 'retrain.optimizer', 'must be sgd or rmsprop_tf')
    _check(cfg.retrain.schedule in ('cosine_epoch', 'step'), 'retrain.schedule', 'must be cosine_epoch or step')
    if cfg.space == 'imagenet' and cfg.stage in ('bench',):
        raise ConfigError("config key 'stage': bench needs space=nas_bench_macro (the benchmark is on CIFAR-10)")
    if cfg.space == 'imagenet' and cfg.search.evaluator == 'benchmark':
        raise ConfigError("config key 'search.evaluator': the benchmark evaluator needs space=nas_bench_macro")
    if cfg.stage == 'retrain':
        if cfg.space == 'imagenet':
            _check(bool(cfg.retrain.model) != bool(cfg.retrain.arch), 'retrain.model',
                   f'(or retrain.arch) must name one of {", ".join(imagenet_space.MCTNAS_ARCHS)} or give 21 indices')
            _check(not cfg.retrain.model or cfg.retrain.model in imagenet_space.MCTNAS_ARCHS, 'retrain.model',
                   f'must be one of {", ".join(imagenet_space.MCTNAS_ARCHS)}, got {cfg.retrain.model!r}')
        else:
            _check(bool(cfg.retrain.arch), 'retrain.arch', 'must give an 8-digit NAS-Bench-Macro architecture')
        if cfg.retrain.arch:
            try:
                _parse_retrain_arch(cfg)
            except ValueError as e:
                raise ConfigError(f"config key 'retrain.arch': {e}") from None


def _parse_retrain_arch(cfg):
    arch = cfg.retrain.arch
    if cfg.space == 'nas_bench_macro':
        return parse_arch(str(arch))
    arch = [int(a) for a in (arch.replace(',', ' ').split() if isinstance(arch, str) else arch)]
    if len(arch) != imagenet_space.NUM_LAYERS or any(not 0 <= a < len(imagenet_space.CHOICES) for a in arch):
        raise ValueError(f'needs {imagenet_space.NUM_LAYERS} indices in 0..{len(imagenet_space.CHOICES) - 1}')
    return arch


def resolve_path(path):
    """A path as given (cwd-relative or absolute), else relative to this folder."""
    p = Path(os.path.expanduser(str(path)))
    if p.is_absolute() or p.exists():
        return p
    return HERE / p


def load_benchmark(cfg, required=True):
    path = resolve_path(cfg.benchmark.path)
    if not path.is_file():
        if required:
            raise DatasetError(f"NAS-Bench-Macro file '{path}' not found (config key 'benchmark.path'); it is "
                               f"data/nas-bench-macro_cifar10.json of github.com/xiusu/NAS-Bench-Macro")
        return None
    try:
        return NASBenchMacro(path)
    except ValueError as e:
        raise DatasetError(str(e)) from None


# --------------------------------------------------------------------------------------------- data
def _imagenet_like(cfg):
    return cfg.data.name in ('imagefolder', 'imagenet')


def transform(cfg, train, color_jitter=0.0):
    from torchvision import transforms as T
    if cfg.data.name == 'cifar10':
        mean, std = CIFAR10_STATS
    else:
        mean, std = DATASET_STATS.get(cfg.data.name, DATASET_STATS['imagenet'])
    size = cfg.data.image_size
    if _imagenet_like(cfg):
        ops = [T.RandomResizedCrop(size), T.RandomHorizontalFlip()] if train else \
            [T.Resize(int(round(size / 0.875))), T.CenterCrop(size)]
        if train and color_jitter > 0:
            ops.append(T.ColorJitter(color_jitter, color_jitter, color_jitter))
    else:
        ops = [T.RandomCrop(size, padding=size // 8), T.RandomHorizontalFlip()] if train else []
    return T.Compose(ops + [T.ToTensor(), T.Normalize(mean, std)])


def make_dataset(cfg, split, train_transform, color_jitter=0.0):
    options = {}
    if cfg.data.name in ('synthetic',):
        options = dict(num_classes=cfg.data.num_classes, image_size=cfg.data.image_size,
                       train_size=cfg.data.train_size, test_size=cfg.data.test_size, seed=cfg.seed)
    return build_dataset(cfg.data.name, cfg.data.root, split=split,
                         transform=transform(cfg, train_transform, color_jitter), **options)


def _num_classes(ds):
    while isinstance(ds, torch.utils.data.Subset):
        ds = ds.dataset
    return len(ds.classes)


def datasets(cfg):
    """(train set, BN-recalibration set, search validation set, number of classes)."""
    train = make_dataset(cfg, 'train', True)
    if cfg.data.val_per_class > 0:  # GreedyNAS-style split: held-out training images score the paths
        val_idx = labeled_subset(train, num_per_class=cfg.data.val_per_class, seed=cfg.seed)
        held = set(val_idx)
        train_idx = [i for i in range(len(train)) if i not in held]
        val = torch.utils.data.Subset(make_dataset(cfg, 'train', False), val_idx)
        train = torch.utils.data.Subset(train, train_idx)
    else:
        val = make_dataset(cfg, cfg.data.test_split, False)
    return train, val, _num_classes(train)


def plain_loader(ds, batch_size, shuffle, seed, num_workers=0):
    """A single-process loader (rank 0's search), independent of torchrun's sampler."""
    g = torch.Generator()
    g.manual_seed(seed)
    return torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=shuffle, generator=g,
                                       num_workers=num_workers, drop_last=False)


# --------------------------------------------------------------------------------------------- models
def build_supernet(cfg, classes):
    if cfg.space == 'imagenet':
        return imagenet_space.build_supernet_mbv2(num_classes=classes)
    return MacroSupernet(num_classes=classes, init_channels=cfg.model.init_channels, tf_init=cfg.model.tf_init)


def param_groups(model, weight_decay, no_wd_1d=True):
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if no_wd_1d and p.ndim <= 1 else decay).append(p)
    return [{'params': decay, 'weight_decay': weight_decay}, {'params': no_decay, 'weight_decay': 0.0}]


def arch_str(arch, space):
    if space == 'nas_bench_macro':
        return ''.join(map(str, arch))
    return ' '.join(map(str, arch))


def describe(arch, space):
    if space == 'nas_bench_macro':
        return '[' + ', '.join(candidate_OP[a] for a in arch) + ']'
    return str(imagenet_space.subnet_to_layers(arch))


# --------------------------------------------------------------------------------------------- supernet
def _load(obj, state, what, *args):
    """``obj.load_state_dict(state)`` with a clear error for a checkpoint that does not fit."""
    try:
        obj.load_state_dict(state, *args)
    except (ValueError, KeyError, TypeError, IndexError) as e:
        raise CheckpointError(f'the {what} state in the checkpoint does not fit this config: {e}') from None


def _window(lo, hi):
    return lo, (math.inf if hi is None or hi < 0 else hi)


def make_sampler(cfg, seed):
    m = cfg.mct
    lo, hi = _window(m.flops_min, m.flops_max)
    return MCTSampler(flops_min=lo, flops_max=hi, max_times=m.max_times, warmup_iters=m.warmup_iters,
                      mct_start_iter=m.mct_start_iter, beta=m.beta, gamma=m.gamma, C1=m.C1, C2=m.C2, tau=m.tau,
                      rng=random.Random(seed))


def train_one_epoch(model, loader, optimizer, sampler, choices, flops_fn, epoch, total_iters, cfg, run, scaler):
    net = dist.unwrap(model)
    model.train()
    meters = {'loss': AverageMeter('loss'), 'acc': AverageMeter('acc')}
    speed = Throughput()
    iters = len(loader)
    bar = progress(loader, total=iters, desc=f'epoch {epoch}')
    lr = cfg.lr
    for i, (x, y) in enumerate(bar):
        it = epoch * iters + i
        lr = set_lr(optimizer, cosine_lr(it, total_iters, cfg.lr, min_lr=cfg.min_lr))
        subnet = sampler.gen_subnet(choices, flops_fn)
        if run.world_size > 1:  # rank 0 samples, everyone trains the same path
            subnet = dist.broadcast(torch.tensor(subnet, dtype=torch.long), 0).tolist()
        net.set_subnet(subnet)
        x, y = x.to(run.device, non_blocking=True), y.to(run.device, non_blocking=True)
        with torch.autocast(run.device.type, enabled=run.amp):
            logits = model(x)
            loss = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
        loss_value = loss.item()
        if not math.isfinite(loss_value):
            raise FloatingPointError(f'loss is {loss_value} at epoch {epoch}, iteration {i}')
        sampler.update_reward(subnet, loss_value)  # before backward, with this rank's loss
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        n = y.shape[0]
        meters['loss'].update(loss_value, n)
        meters['acc'].update((logits.argmax(1) == y).float().mean().item() * 100, n)
        speed.update(n * run.world_size)
        update_progress(bar, loss=meters['loss'].avg, lr=lr, phase=sampler.phase)
        if (i % cfg.print_freq == 0 or i == iters - 1) and not hasattr(bar, 'set_postfix'):
            run.log(f'epoch {epoch} [{i + 1}/{iters}] loss {meters["loss"].avg:.4f} lr {lr:.5f} '
                    f'phase {sampler.phase} {speed.rate:.0f} img/s')
    return {'loss': meters['loss'].avg, 'train_acc': meters['acc'].avg, 'lr': lr, 'img_per_s': speed.rate}


def make_evaluators(cfg, run, train_set, val_set, bench):
    """(loss evaluator, score evaluator): the supernet's one-batch loss drives the re-evaluations; paths are
    scored by the BN-recalibrated supernet, or by the NAS-Bench-Macro table with ``search.evaluator=benchmark``."""
    nw, bs = cfg.data.num_workers, cfg.search.batch_size
    bn_loader = plain_loader(train_set, bs, True, cfg.seed, nw)
    loss_ev = SupernetEvaluator(bn_loader, plain_loader(val_set, bs, True, cfg.seed + 1, nw), run.device,
                                bn_batches=cfg.search.bn_batches, update_data_freq=cfg.search.update_data_freq,
                                loss_bn=cfg.search.loss_bn)
    if cfg.search.evaluator == 'benchmark':
        return loss_ev, BenchmarkEvaluator(bench)
    return loss_ev, SupernetEvaluator(bn_loader, plain_loader(val_set, bs, False, 0, nw), run.device,
                                      bn_batches=cfg.search.bn_batches)


def run_search(cfg, run, model, sampler, searcher, flops_fn, train_set, val_set, bench, save):
    """Hierarchical node selection on rank 0; returns the top-k list and the score evaluator."""
    net = dist.unwrap(model)
    loss_ev, acc_ev = make_evaluators(cfg, run, train_set, val_set, bench)
    t0 = time.time()
    done = len(searcher.history)

    def on_scored(subnet, score):
        extra = ''
        if bench is not None and cfg.space == 'nas_bench_macro':
            extra = f' (benchmark {bench.acc(subnet):.2f}%, rank {bench.rank(subnet)})'
        run.log(f'search [{len(searcher.history)}/{cfg.search.search_num}] {arch_str(subnet, cfg.space)} '
                f'score {score:.2f}{extra}')
        run.metrics.write({'stage': 'search', 'scored': len(searcher.history), 'arch': arch_str(subnet, cfg.space),
                           'score': score, 'loss_evals': searcher.n_loss_evals})
        save()

    if done:
        run.log(f'resuming the search with {done} architectures already scored')
    top = searcher.search(net, loss_ev.eval_loss, acc_ev.eval_acc, flops_fn, tree=sampler.tree,
                          tilde_L=sampler.tilde_L, top_k=cfg.search.top_k, callback=on_scored)
    run.log(f'search: {len(searcher.history)} architectures scored, {searcher.n_loss_evals} one-batch loss '
            f're-evaluations, {time.time() - t0:.1f}s')
    if len(searcher.history) < cfg.search.search_num:
        run.log(f'warning: the tree ran out of paths after {len(searcher.history)} of search.search_num='
                f'{cfg.search.search_num} (it only holds the paths visited in training, minus those out of the '
                f'FLOPs window)')
    return top, acc_ev


def random_baseline(cfg, run, model, acc_ev, exclude, choices, flops_fn):
    """Score ``search.random_baseline`` uniformly drawn paths with the same evaluator (SPOS-style)."""
    rng = random.Random(cfg.seed + 12345)
    lo, hi = _window(cfg.search.flops_min, cfg.search.flops_limit)
    scores, tries = [], 0
    while len(scores) < cfg.search.random_baseline and tries < 100 * cfg.search.random_baseline:
        tries += 1
        arch = [rng.randrange(c) for c in choices]
        if tuple(arch) in exclude or (flops_fn is not None and not lo <= flops_fn(arch) <= hi):
            continue
        exclude.add(tuple(arch))
        scores.append((arch, acc_ev.eval_acc(dist.unwrap(model), arch)))
    return scores


def report_top(cfg, run, top, bench, flops_fn):
    lines = [f'top-{len(top)} architectures by search score:']
    for arch, score in top:
        extra = ''
        if bench is not None and cfg.space == 'nas_bench_macro':
            extra = f'  NAS-Bench-Macro {bench.acc(arch):.2f}% rank {bench.rank(arch)}/{len(bench)}'
        macs = f'  {flops_fn(arch) / 1e6:.1f}M MACs' if flops_fn is not None else ''
        lines.append(f'  {arch_str(arch, cfg.space)}  score {score:.2f}{macs}{extra}')
    run.log('\n'.join(lines))


def stage_supernet(cfg, run, search_only=False):
    train_set, val_set, classes = datasets(cfg)
    model = build_supernet(cfg, classes)
    choices = list(model.choices)
    flops_fn = SubnetCost(model, (1, 3, cfg.data.image_size, cfg.data.image_size))  # on CPU, once
    model.to(run.device)
    sampler = make_sampler(cfg, cfg.seed)
    sampler.init_tree(choices)
    searcher = MCTSearcher(n_thrd=cfg.search.n_thrd, flops_min=cfg.search.flops_min,
                           flops_limit=cfg.search.flops_limit, tau=cfg.search.tau, search_num=cfg.search.search_num,
                           C2=cfg.mct.C2)
    optimizer = torch.optim.SGD(param_groups(model, cfg.weight_decay), lr=cfg.lr, momentum=cfg.momentum,
                                nesterov=cfg.nesterov)
    bench = None
    want_bench = cfg.benchmark.report == 'always' or (cfg.benchmark.report == 'auto' and cfg.data.name == 'cifar10')
    if cfg.search.evaluator == 'benchmark':
        bench = load_benchmark(cfg, required=True)
    elif want_bench and cfg.space == 'nas_bench_macro':
        bench = load_benchmark(cfg, required=False)

    if search_only:
        path = cfg.search.checkpoint or run.last_path
        state = run.resume(model=model)
        if state is not None and 'searcher' in state:  # an interrupted search of this output folder
            _load(sampler, state['sampler'], 'sampler', choices)
            _load(searcher, state['searcher'], 'searcher')
        else:  # a fresh search from a trained supernet
            ckpt = load_checkpoint(str(resolve_path(path)))
            if not isinstance(ckpt, dict) or 'model' not in ckpt or ckpt.get('sampler_trained') is None:
                raise CheckpointError(f"'{path}' is not a fully trained MCT-NAS supernet (needs 'model' and "
                                      f"'sampler_trained'; finish stage=supernet first)")
            load_state_dict(model, ckpt['model'], what='model')
            state = {'sampler_trained': ckpt['sampler_trained']}
            _load(sampler, state['sampler_trained'], 'sampler', choices)
        trained_state = state['sampler_trained']
    else:
        model = dist.wrap_ddp(model, run.device, find_unused_parameters=True)
        train_loader = build_loader(train_set, cfg.batch_size, shuffle=True, drop_last=True,
                                    num_workers=cfg.data.num_workers, seed=cfg.seed)
        iters = len(train_loader)
        total = iters * cfg.epochs
        if cfg.mct.mct_start_iter >= total:
            run.log(f'warning: mct.mct_start_iter={cfg.mct.mct_start_iter} >= {total} training iterations: the '
                    f'supernet is never trained with tree sampling')
        scaler = torch.amp.GradScaler('cuda', enabled=run.amp)
        state = run.resume(model=model, optimizer=optimizer)
        trained_state = None
        if state is not None:
            searched = 'searcher' in state
            if searched and run.start_epoch >= cfg.epochs:  # training done: continue the interrupted search
                _load(sampler, state['sampler'], 'sampler', choices)
                _load(searcher, state['searcher'], 'searcher')
                trained_state = state['sampler_trained']
            elif searched:  # more epochs asked for: train on from the tree as trained, not as pruned by search
                _load(sampler, state['sampler_trained'], 'sampler', choices)
            else:
                _load(sampler, state['sampler'], 'sampler', choices)
                trained_state = state.get('sampler_trained')
        run.log(f'supernet: {count_params(dist.unwrap(model)) / 1e6:.2f}M params, {iters} iterations/epoch, '
                f'uniform until {cfg.mct.warmup_iters}, tree building until {cfg.mct.mct_start_iter}, '
                f'tree sampling after')
        for epoch in range(run.start_epoch, cfg.epochs):
            set_epoch(train_loader, epoch)
            t0 = time.time()
            stats = train_one_epoch(model, train_loader, optimizer, sampler, choices, flops_fn, epoch, total, cfg,
                                    run, scaler)
            tree = sampler.tree
            run.log_metrics({'epoch': epoch, **stats, 'phase': sampler.phase, 'iter': sampler.iter,
                             'tilde_L': sampler.tilde_L, 'tree_leaves': tree.size if tree else 0,
                             'time': time.time() - t0})
            if epoch == cfg.epochs - 1:
                trained_state = sampler.state_dict()
            run.save({'model': dist.unwrap(model).state_dict(), 'optimizer': optimizer.state_dict(),
                      'sampler': sampler.state_dict(), 'sampler_trained': trained_state, 'epoch': epoch + 1})
        if trained_state is None:
            trained_state = sampler.state_dict()
    epochs_done = max(run.start_epoch, cfg.epochs) if not search_only else 0

    result = {}
    if run.is_main:
        def save():
            out = {'model': dist.unwrap(model).state_dict(), 'sampler': sampler.state_dict(),
                   'sampler_trained': trained_state, 'searcher': searcher.state_dict(), 'epoch': epochs_done}
            if not search_only:
                out['optimizer'] = optimizer.state_dict()
            out['rng'] = rng_state()
            save_checkpoint(out, run.last_path)

        top, acc_ev = run_search(cfg, run, model, sampler, searcher, flops_fn, train_set, val_set, bench, save)
        if not top:
            raise ConfigError("the search found no architecture inside the FLOPs window "
                              "(config keys 'search.flops_min' / 'search.flops_limit')")
        report_top(cfg, run, top, bench, flops_fn)
        best, score = top[0]
        result = {'arch': arch_str(best, cfg.space), 'score': score, 'macs': flops_fn(best),
                  'params': flops_fn.params(best), 'top': [(arch_str(a, cfg.space), s) for a, s in top]}
        if cfg.search.random_baseline > 0:
            scored = {tuple(a) for a, _ in searcher.history}
            rand = random_baseline(cfg, run, model, acc_ev, scored, choices, flops_fn)
            if rand:
                vals = [s for _, s in rand]
                result['random_mean'], result['random_best'] = sum(vals) / len(vals), max(vals)
                run.log(f'random baseline: {len(vals)} uniformly drawn paths score {result["random_mean"]:.2f} on '
                        f'average (best {result["random_best"]:.2f}) with the same evaluator')
        if bench is not None and cfg.space == 'nas_bench_macro':
            result['bench_acc'], result['bench_rank'] = bench.acc(best), bench.rank(best)
        run.log_metrics({'stage': 'result', **{k: v for k, v in result.items() if k != 'top'}})
    dist.barrier()
    return result


def headline_supernet(cfg, result):
    if not result:
        return 'MCT-NAS: search ran on rank 0'
    what = 'supernet top-1' if cfg.search.evaluator == 'supernet' else 'NAS-Bench-Macro acc'
    text = (f'MCT-NAS searched architecture {result["arch"]} '
            f'({result["params"] / 1e6:.2f}M params, {result["macs"] / 1e6:.1f}M MACs): {what} '
            f'{result["score"]:.2f}% on {cfg.data.name}')
    if 'random_mean' in result:
        text += f' (random paths: {result["random_mean"]:.2f}%)'
    if 'bench_acc' in result:
        text += f'; NAS-Bench-Macro {result["bench_acc"]:.2f}%, rank {result["bench_rank"]}/6561'
    return text


# --------------------------------------------------------------------------------------------- bench
def stage_bench(cfg, run):
    bench = load_benchmark(cfg, required=True)
    rng = random.Random(cfg.seed)
    choices = [len(candidate_OP)] * 8
    sampler = make_sampler(cfg, cfg.seed)
    sampler.init_tree(choices)
    evaluator = BenchmarkEvaluator(bench, noise=cfg.benchmark.noise, rng=rng)
    searcher = MCTSearcher(n_thrd=cfg.search.n_thrd, tau=cfg.search.tau, search_num=cfg.search.search_num,
                           C2=cfg.mct.C2)
    state = run.resume(sampler=sampler)
    if state is not None:
        searcher.load_state_dict(state['searcher'])
    if sampler.iter < cfg.benchmark.iters:
        t0 = time.time()
        for _ in progress(range(sampler.iter, cfg.benchmark.iters), desc='tree training (oracle losses)'):
            arch = sampler.gen_subnet(choices)
            sampler.update_reward(arch, evaluator.pseudo_loss(arch))
        run.log_metrics({'stage': 'tree', 'iter': sampler.iter, 'tilde_L': sampler.tilde_L,
                         'tree_leaves': sampler.tree.size, 'time': time.time() - t0})
        run.save({'sampler': sampler.state_dict(), 'searcher': searcher.state_dict(), 'epoch': 1})

    def on_scored(subnet, score):
        run.log_metrics({'stage': 'search', 'scored': len(searcher.history), 'arch': arch_str(subnet, cfg.space),
                         'acc': score, 'rank': bench.rank(subnet)})

    top = searcher.search(None, evaluator.eval_loss, evaluator.eval_acc, tree=sampler.tree, tilde_L=sampler.tilde_L,
                          top_k=cfg.search.top_k, callback=on_scored)
    run.save({'sampler': sampler.state_dict(), 'searcher': searcher.state_dict(), 'epoch': 1})
    report_top(cfg, run, top, bench, None)
    best, acc = top[0]
    run.log(f'{len(searcher.history)} architectures scored by table lookup after {searcher.n_loss_evals} oracle-loss '
            f're-evaluations; optimum {bench.best()[0]} {bench.best()[1]:.2f}%')
    return (f'MCT-NAS on NAS-Bench-Macro (oracle losses, table evaluator): best of {len(searcher.history)} searched '
            f'{arch_str(best, cfg.space)} = {acc:.2f}%, rank {bench.rank(best)}/{len(bench)}')


# --------------------------------------------------------------------------------------------- retrain
def build_retrain_model(cfg, classes):
    r = cfg.retrain
    if cfg.space == 'imagenet':
        if r.model:
            return imagenet_space.build_mctnas(r.model, num_classes=classes, drop_rate=r.drop_rate), r.model
        arch = _parse_retrain_arch(cfg)
        return (imagenet_space.build_from_layers(imagenet_space.subnet_to_layers(arch), num_classes=classes,
                                                 drop_rate=r.drop_rate), arch_str(arch, cfg.space))
    arch = _parse_retrain_arch(cfg)
    return Network(arch, num_classes=classes, init_channels=cfg.model.init_channels), arch_str(arch, cfg.space)


@torch.no_grad()
def evaluate(model, loader, device):
    model.eval()
    correct = torch.zeros(2, device=device)
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        out = model(x)
        top5 = out.topk(min(5, out.shape[1]), 1).indices
        correct[0] += (top5[:, 0] == y).sum()
        correct[1] += (top5 == y[:, None]).any(1).sum()
    n = torch.tensor(float(len(loader.dataset)), device=device)
    return (100 * dist.all_reduce_sum(correct) / n).tolist() if dist.get_world_size() > 1 else \
        (100 * correct / n).tolist()


def stage_retrain(cfg, run):
    r = cfg.retrain
    train_set = make_dataset(cfg, 'train', True, r.color_jitter)
    test_set = make_dataset(cfg, cfg.data.test_split, False)
    model, name = build_retrain_model(cfg, _num_classes(train_set))
    macs = count_macs(model, (1, 3, cfg.data.image_size, cfg.data.image_size))
    run.log(f'retrain {name}: {count_params(model) / 1e6:.3f}M params, {macs / 1e6:.1f}M MACs')
    model.to(run.device)
    groups = param_groups(model, r.weight_decay, no_wd_1d=r.no_wd_bn_bias)
    if r.optimizer == 'sgd':
        optimizer = torch.optim.SGD(groups, lr=r.lr, momentum=r.momentum, nesterov=r.nesterov)
    else:
        optimizer = RMSpropTF(groups, lr=r.lr, alpha=0.9, eps=r.rmsprop_eps, momentum=r.momentum)
    ema = ModelEma(model, r.ema_decay) if r.ema_decay > 0 else None
    ddp = dist.wrap_ddp(model, run.device)
    loader = build_loader(train_set, r.batch_size, shuffle=True, drop_last=False, num_workers=cfg.data.num_workers,
                          seed=cfg.seed)
    test_loader = build_loader(test_set, r.batch_size, shuffle=False, drop_last=False,
                               num_workers=cfg.data.num_workers, seed=cfg.seed)
    state = run.resume(model=model, optimizer=optimizer, ema=ema)
    best = state.get('best_acc', 0.0) if state else 0.0
    criterion = nn.CrossEntropyLoss(label_smoothing=r.label_smoothing)
    scaler = torch.amp.GradScaler('cuda', enabled=run.amp)
    top1 = top5 = 0.0
    for epoch in range(run.start_epoch, r.epochs):
        if r.schedule == 'cosine_epoch':  # benchmark: CosineAnnealingLR stepped at the start of each epoch
            lr = 0.5 * r.lr * (1 + math.cos(math.pi * (epoch + 1) / r.epochs))
        else:
            lr = step_decay_lr(epoch, r.lr, r.decay_epochs, r.decay_rate, r.warmup_epochs, r.warmup_lr)
        set_lr(optimizer, lr)
        set_epoch(loader, epoch)
        ddp.train()
        meter = AverageMeter('loss')
        for x, y in progress(loader, desc=f'retrain {epoch}'):
            x, y = x.to(run.device), y.to(run.device)
            with torch.autocast(run.device.type, enabled=run.amp):
                loss = criterion(ddp(x), y)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            if ema is not None:
                ema.update(model)
            meter.update(loss.item(), y.shape[0])
        top1, top5 = evaluate(ema.module if ema is not None else model, test_loader, run.device)
        is_best = top1 > best
        best = max(best, top1)
        run.log_metrics({'epoch': epoch, 'loss': meter.avg, 'lr': lr, 'top1': top1, 'top5': top5, 'best_top1': best})
        run.save({'model': model.state_dict(), 'optimizer': optimizer.state_dict(),
                  'ema': ema.state_dict() if ema is not None else None, 'epoch': epoch + 1, 'best_acc': best},
                 is_best=is_best)
    text = f'retrained {name}: best-epoch top-1 {best:.2f}% (last epoch {top1:.2f}% / top-5 {top5:.2f}%)'
    if cfg.space == 'nas_bench_macro' and cfg.data.name == 'cifar10':
        bench = load_benchmark(cfg, required=False)
        if bench is not None:
            text += f'; NAS-Bench-Macro says {bench.acc(_parse_retrain_arch(cfg)):.2f}%'
    return text


# --------------------------------------------------------------------------------------------- main
def main(argv=None):
    cfg = parse_cli(DEFAULTS, argv, description='MCT-NAS: Monte-Carlo tree search NAS on NAS-Bench-Macro / ImageNet')
    validate(cfg)
    run = setup_run(cfg)
    if cfg.stage == 'bench':
        return run.finish(stage_bench(cfg, run))
    if cfg.stage == 'retrain':
        return run.finish(stage_retrain(cfg, run))
    result = stage_supernet(cfg, run, search_only=cfg.stage == 'search')
    run.finish(headline_supernet(cfg, result))
    return result


if __name__ == '__main__':
    guard(main)
