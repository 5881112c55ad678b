"""K-shot NAS main job: ``python main.py --cfg cfg.yaml [--opts key=value ...]``.

Stages (``stage``):
  supernet  train the K-shot supernets and the simplex-net (warm-up with uniform codes, then alternating steps),
            then run the evolutionary search and report the best paths (the paper's train + search pipeline);
  search    search again from a trained checkpoint (``search.checkpoint``);
  retrain   train one path from scratch as an ordinary network (``retrain.arch``);
  test      evaluate a retrained checkpoint (``retrain.checkpoint``, default <output_dir>/best.pth).
Multi-process: ``torchrun --nproc_per_node=N main.py --cfg ...`` (gloo on CPU, nccl on CUDA). Every rank trains the
same paths (shared path seed) on its shard of the data and gradients are averaged; rank 0 runs the search.
"""
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from common import dist
from common.checkpoint import load_checkpoint, load_state_dict, rng_state, save_checkpoint
from common.config import parse_cli
from common.data import DATASET_STATS, build_dataset, build_loader, labeled_subset, set_epoch
from common.errors import CheckpointError, ConfigError, guard
from common.log import AverageMeter, progress, update_progress
from common.runner import setup_run
from common.schedule import cosine_lr, set_lr

from model import StandaloneNet, count_parameters
from search import EvolutionSearcher, PathEvaluator
from search_space import OPS, STAGES, WIDTH_CHOICES, parse_op
from simplex import SimplexNet
from supernet import KShotSuperNet
from train import KShotTrainer, supernet_param_groups, train_kshot

HERE = Path(__file__).resolve().parent

DEFAULTS = {
    'output_dir': 'output/kshot_nas',
    'seed': 0,
    'device': 'auto',
    'resume': True,
    'stage': 'supernet',              # supernet | search | retrain | test
    'data': {
        'name': 'synthetic',          # common.data: synthetic, cifar10, imagefolder (ImageNet), ...
        'root': None,
        'image_size': 224,
        'num_classes': 10,            # synthetic only
        'train_size': 5000,           # synthetic only
        'test_size': 1000,            # synthetic only
        'num_workers': 0,
        'test_split': 'test',         # 'val' for an ImageNet folder
        'val_per_class': 0,           # > 0: hold out this many training images per class to score paths
        'color_jitter': 0.4,          # supernet training augmentation (ImageNet-like data only)
        'cache': False,               # keep the decoded images in memory (small data sets: synthetic, CIFAR)
    },
    'model': {                        # the search space and the K-shot supernet
        'K': 3,                       # number of supernets (conv copies, `weight_num`)
        'bn_K': None,                 # BN / SE copies (`bn_weight_num`): None = K, or 1 (shared)
        'stages': [list(s) for s in STAGES],
        'ops': list(OPS),
        'stem_channels': 32,
        'first_channels': 16,
        'last_channels': 1280,
        'stem_stride': 2,
        'act': 'hswish',              # searchable MBConvs
        'stem_act': 'relu',           # stem and head
        'channel_search': False,      # slimmable hidden widths + the simplex-net's width branch
        'width_choices': list(WIDTH_CHOICES),
        'per_layer_code': False,      # one code per layer instead of one per path (ours, off)
    },
    'supernet': {
        'epochs': 120,                # total, warm-up included
        'warmup_epochs': 5,           # uniform code 1/K
        'batch_size': 128,            # per process
        'lr': 0.12, 'min_lr': 0.0, 'momentum': 0.9, 'nesterov': True,
        'weight_decay': 4e-5, 'no_wd_bn_bias': True, 'label_smoothing': 0.1,
    },
    'simplex': {
        'code': 'simplex',            # simplex (learned codes) | uniform (lam = 1/K throughout: an ablation)
        'reduction': 4,               # hidden = L*|O| // reduction
        'lr': None,                   # None: the supernet's
        'weight_decay': None,         # None: the supernet's
        'num_paths': 16,              # m paths per simplex-net step
        'interval': 2,                # every interval-th iteration after the warm-up is a simplex-net step
        'reg_gamma': 0.1,             # channel search: weight of the code-distinction regulariser
    },
    'search': {
        'checkpoint': None,           # stage=search: trained supernet (default <output_dir>/last.pth)
        'population_num': 50, 'max_epoch': 20, 'top_k_num': 10,
        'mutation_num': 25, 'mutation_prob': 0.1, 'crossover_num': 25,
        'flops_limit': 330e6,         # MACs at data.image_size; <= 0: none
        'recal_bn_iters': 20,
        'batch_size': 128,
        'val_batches': -1,            # batches of the held-out data per score (-1: all)
        'show_top': 5,
    },
    'retrain': {
        'arch': '',                   # op indices, e.g. "0-1-12-..." (21 for ImageNet)
        'widths': '',                 # with channel search: one ratio per layer
        'checkpoint': None,           # stage=test: default <output_dir>/best.pth
        'epochs': 300, 'batch_size': 128, 'lr': 0.4, 'min_lr': 0.0, 'momentum': 0.9, 'nesterov': True,
        'weight_decay': 4e-5, 'no_wd_bn_bias': True, 'warmup_epochs': 5, 'label_smoothing': 0.1,
        'dropout': 0.2, 'randaugment_m': 9, 'ema_decay': 0.9999,
    },
}

STAGE_NAMES = ('supernet', 'search', 'retrain', 'test')


# --------------------------------------------------------------------------------------------- config
def _get(cfg, key):
    value = cfg
    for part in key.split('.'):
        value = value[part]
    return value


def _check(cond, key, msg):
    if not cond:
        raise ConfigError(f"config key '{key}' {msg}")


def validate(cfg):
    _check(cfg.stage in STAGE_NAMES, 'stage', f'must be one of {", ".join(STAGE_NAMES)}, got {cfg.stage!r}')
    for key in ('model.K', 'model.stem_channels', 'model.first_channels', 'model.last_channels', 'model.stem_stride',
                'data.image_size', 'supernet.epochs', 'supernet.batch_size', 'simplex.reduction',
                'simplex.num_paths', 'search.population_num', 'search.top_k_num', 'search.batch_size',
                'search.show_top', 'retrain.epochs', 'retrain.batch_size'):
        _check(_get(cfg, key) > 0, key, f'must be > 0, got {_get(cfg, key)!r}')
    for key in ('supernet.warmup_epochs', 'supernet.lr', 'supernet.min_lr', 'supernet.momentum',
                'supernet.weight_decay', 'supernet.label_smoothing', 'simplex.interval', 'simplex.reg_gamma',
                'search.max_epoch', 'search.mutation_num', 'search.crossover_num', 'search.recal_bn_iters',
                'retrain.lr', 'retrain.weight_decay', 'retrain.warmup_epochs', 'retrain.dropout',
                'retrain.randaugment_m', 'retrain.ema_decay', 'data.val_per_class'):
        _check(_get(cfg, key) >= 0, key, f'must be >= 0, got {_get(cfg, key)!r}')
    _check(cfg.supernet.warmup_epochs <= cfg.supernet.epochs, 'supernet.warmup_epochs',
           f'must be <= supernet.epochs ({cfg.supernet.epochs})')
    _check(cfg.supernet.label_smoothing < 1, 'supernet.label_smoothing', 'must be < 1')
    _check(0 <= cfg.search.mutation_prob <= 1, 'search.mutation_prob', 'must lie in [0, 1]')
    _check(cfg.retrain.ema_decay < 1, 'retrain.ema_decay', 'must be < 1')
    _check(cfg.model.bn_K in (None, 1, cfg.model.K), 'model.bn_K', f'must be null, 1 or model.K ({cfg.model.K})')
    _check(cfg.simplex.code in ('simplex', 'uniform'), 'simplex.code', f'must be simplex or uniform, got '
                                                                         f'{cfg.simplex.code!r}')
    for key in ('simplex.lr', 'simplex.weight_decay'):
        v = _get(cfg, key)
        _check(v is None or (isinstance(v, (int, float)) and v >= 0), key, f'must be null or >= 0, got {v!r}')
    for key in ('model.act', 'model.stem_act'):
        _check(_get(cfg, key) in ('relu', 'hswish'), key, f'must be relu or hswish, got {_get(cfg, key)!r}')
    try:
        stages = [tuple(int(v) for v in s) for s in cfg.model.stages]
        assert stages and all(len(s) == 3 and min(s) > 0 for s in stages)
    except (TypeError, ValueError, AssertionError):
        raise ConfigError(f"config key 'model.stages' must be a list of [c_out, layers, stride] with positive "
                          f"entries, got {cfg.model.stages!r}") from None
    try:
        for op in cfg.model.ops:
            parse_op(op)
    except ValueError as e:
        raise ConfigError(f"config key 'model.ops': {e}") from None
    _check(len(set(cfg.model.ops)) == len(cfg.model.ops), 'model.ops', 'lists an op twice')
    _check(all(isinstance(w, (int, float)) and 0 < w <= 1 for w in cfg.model.width_choices) and
           cfg.model.width_choices, 'model.width_choices', 'must be ratios in (0, 1]')
    if cfg.stage in ('retrain', 'test'):
        _check(bool(str(cfg.retrain.arch).strip()), 'retrain.arch', 'must give the path to retrain (op indices)')
        try:
            parse_path(cfg)
        except ValueError as e:
            raise ConfigError(f"config key 'retrain.arch': {e}") from None


def _numbers(text, cast):
    if isinstance(text, (list, tuple)):
        return [cast(v) for v in text]
    return [cast(v) for v in str(text).replace(',', ' ').replace('-', ' ').split()]


def parse_path(cfg):
    """(arch, widths) of ``retrain.arch`` / ``retrain.widths``, checked against the space."""
    arch = _numbers(cfg.retrain.arch, int)
    widths = _numbers(cfg.retrain.widths, float) if str(cfg.retrain.widths).strip() else None
    space = build_space_only(cfg)
    space.check(arch, widths)
    return arch, widths


def build_space_only(cfg):
    from search_space import SearchSpace
    m = cfg.model
    return SearchSpace(m.stages, m.ops, m.stem_channels, m.first_channels, m.last_channels, m.stem_stride,
                       cfg.data.image_size, width_choices=m.width_choices)


def resolve_path(path):
    p = Path(os.path.expanduser(str(path)))
    return p if p.is_absolute() or p.exists() else HERE / p


# --------------------------------------------------------------------------------------------- data
def _imagenet_like(cfg):
    return cfg.data.name in ('imagefolder', 'imagenet')


def transform(cfg, train, retrain=False):
    from torchvision import transforms as T
    mean, std = DATASET_STATS.get(cfg.data.name, DATASET_STATS['imagenet'])
    size = cfg.data.image_size
    if _imagenet_like(cfg):
        if train:
            ops = [T.RandomResizedCrop(size), T.RandomHorizontalFlip()]
            if retrain and cfg.retrain.randaugment_m > 0:
                ops.append(T.RandAugment(num_ops=2, magnitude=int(cfg.retrain.randaugment_m)))
            elif not retrain and cfg.data.color_jitter > 0:
                ops.append(T.ColorJitter(*(3 * [cfg.data.color_jitter])))
        else:
            ops = [T.Resize(int(round(size / 0.875))), T.CenterCrop(size)]
    else:
        ops = [T.RandomCrop(size, padding=size // 8), T.RandomHorizontalFlip()] if train else []
    return T.Compose(ops + [T.ToTensor(), T.Normalize(mean, std)])


class CachedDataset(torch.utils.data.Dataset):
    """Decoded (or generated) images kept in memory once; the transform is applied per access."""
    _store = {}

    def __init__(self, key, build, transform):
        if key not in self._store:
            ds = build()
            self._store[key] = ([ds[i] for i in range(len(ds))], ds.classes, ds.targets)
        self.items, self.classes, self.targets = self._store[key]
        self.transform = transform

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        img, y = self.items[i]
        return self.transform(img), y


def make_dataset(cfg, split, train, retrain=False):
    options = {}
    if cfg.data.name == 'synthetic':
        options = dict(num_classes=cfg.data.num_classes, image_size=cfg.data.image_size,
                       train_size=cfg.data.train_size, test_size=cfg.data.test_size, seed=cfg.seed)
    tf = transform(cfg, train, retrain)
    if cfg.data.cache:
        key = (cfg.data.name, str(cfg.data.root), split, tuple(sorted(options.items())))
        return CachedDataset(key, lambda: build_dataset(cfg.data.name, cfg.data.root, split=split, **options), tf)
    return build_dataset(cfg.data.name, cfg.data.root, split=split, transform=tf, **options)


def _num_classes(ds):
    while isinstance(ds, torch.utils.data.Subset):
        ds = ds.dataset
    return len(ds.classes)


def datasets(cfg):
    """(supernet training set, held-out set that scores paths, number of classes)."""
    train = make_dataset(cfg, 'train', True)
    if cfg.data.val_per_class > 0:  # SPOS convention: held-out training images score the paths
        val_idx = labeled_subset(train, num_per_class=cfg.data.val_per_class, seed=cfg.seed)
        held = set(val_idx)
        val = torch.utils.data.Subset(make_dataset(cfg, 'train', False), val_idx)
        train = torch.utils.data.Subset(train, [i for i in range(len(train)) if i not in held])
    else:
        val = make_dataset(cfg, cfg.data.test_split, False)
    return train, val, _num_classes(train)


def plain_loader(ds, batch_size, shuffle, seed, num_workers=0):
    """A single-process loader for rank 0's search, independent of torchrun's sampler."""
    g = torch.Generator()
    g.manual_seed(seed)
    return torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=shuffle, generator=g,
                                       num_workers=num_workers, drop_last=False)


# --------------------------------------------------------------------------------------------- models
def build_models(cfg, classes):
    m = cfg.model
    supernet = KShotSuperNet(K=m.K, stages=[tuple(s) for s in m.stages], ops=m.ops, num_classes=classes,
                             channel_search=m.channel_search, width_choices=tuple(m.width_choices), bn_K=m.bn_K,
                             stem_channels=m.stem_channels, first_channels=m.first_channels,
                             last_channels=m.last_channels, stem_stride=m.stem_stride, act=m.act,
                             stem_act=m.stem_act)
    supernet.space.image_size = cfg.data.image_size
    simplex_net = SimplexNet(supernet.num_layers, supernet.space.num_ops, m.K, cfg.simplex.reduction,
                             len(m.width_choices) if m.channel_search else None, m.per_layer_code)
    return supernet, simplex_net


def make_trainer(cfg, supernet, simplex_net, iters_per_epoch):
    s, x = cfg.supernet, cfg.simplex
    return KShotTrainer(supernet, simplex_net, total_iters=s.epochs * iters_per_epoch,
                        warmup_iters=s.warmup_epochs * iters_per_epoch, lr=s.lr, min_lr=s.min_lr,
                        momentum=s.momentum, nesterov=s.nesterov, weight_decay=s.weight_decay, simplex_lr=x.lr,
                        simplex_weight_decay=x.weight_decay, label_smoothing=s.label_smoothing,
                        num_paths=x.num_paths, simplex_interval=x.interval, reg_gamma=x.reg_gamma, code=x.code,
                        no_wd_bn_bias=s.no_wd_bn_bias, seed=cfg.seed)


def _fmt_code(lam):
    return '(' + ', '.join(f'{v:.3f}' for v in lam.flatten()[:lam.shape[-1]].tolist()) + ')'


# --------------------------------------------------------------------------------------------- supernet + search
def save_rank0(run, state):
    """``run.save`` without its barrier (the search runs on rank 0 alone)."""
    state = dict(state, rng=rng_state(), config=run.cfg.to_dict())
    save_checkpoint(state, run.last_path)


def stage_supernet(cfg, run):
    train_set, val_set, classes = datasets(cfg)
    supernet, simplex_net = build_models(cfg, classes)
    supernet.to(run.device)
    simplex_net.to(run.device)
    loader = build_loader(train_set, cfg.supernet.batch_size, shuffle=True, drop_last=True,
                          num_workers=cfg.data.num_workers, seed=cfg.seed)
    if len(loader) == 0:
        raise ConfigError(f"config key 'supernet.batch_size' ({cfg.supernet.batch_size}) exceeds the per-process "
                          f"training set ({len(train_set)} images)")
    trainer = make_trainer(cfg, supernet, simplex_net, len(loader))
    n_copy = sum(p.numel() for p in supernet.copy_parameters())
    run.log(f'K-shot supernet: K={supernet.K} (BN/SE copies {supernet.bn_K}), {supernet.num_layers} searchable '
            f'layers x {supernet.space.num_ops} ops, {n_copy / 1e6:.2f}M parameters in copies '
            f'({n_copy / supernet.K / 1e6:.2f}M per supernet); simplex-net {count_parameters(simplex_net)} params')
    searcher = make_searcher(cfg, supernet)
    state = run.resume(supernet=supernet, simplex=simplex_net, trainer=trainer)
    if state is not None and state.get('searcher') is not None and state['epoch'] >= cfg.supernet.epochs:
        searcher.load_state_dict(state['searcher'])  # (a search of a supernet trained further is stale)

    def checkpoint(epoch, searcher_state=None):
        return {'supernet': supernet.state_dict(), 'simplex': simplex_net.state_dict(),
                'trainer': trainer.state_dict(), 'epoch': epoch, 'searcher': searcher_state}

    def on_epoch_end(epoch, stats):
        run.log_metrics({'stage': 'supernet', **stats})
        run.save(checkpoint(epoch + 1))

    t0 = time.time()
    if run.start_epoch < cfg.supernet.epochs:
        train_kshot({'epochs': cfg.supernet.epochs}, trainer, loader, run.device, start_epoch=run.start_epoch,
                    on_epoch_end=on_epoch_end, progress=lambda it, desc: progress(it, desc=desc),
                    set_epoch=set_epoch)
        run.log(f'supernet training: {trainer.iter} iterations, {time.time() - t0:.1f}s')
    result = None
    if run.is_main:
        result = run_search(cfg, run, supernet, simplex_net, trainer, searcher, train_set, val_set,
                            save=lambda s: save_rank0(run, checkpoint(cfg.supernet.epochs, s.state_dict())))
    dist.barrier()
    return result


def make_searcher(cfg, supernet):
    s = cfg.search
    return EvolutionSearcher(population_num=s.population_num, max_epoch=s.max_epoch, top_k_num=s.top_k_num,
                             mutation_num=s.mutation_num, mutation_prob=s.mutation_prob,
                             crossover_num=s.crossover_num, flops_limit=s.flops_limit,
                             recal_bn_iters=s.recal_bn_iters, space=supernet.space,
                             channel_search=supernet.channel_search, seed=cfg.seed + 1)


def run_search(cfg, run, supernet, simplex_net, trainer, searcher, train_set, val_set, save):
    s = cfg.search
    nw = cfg.data.num_workers
    simplex_net.eval()
    code_fn = lambda arch, widths: trainer.code_of(arch, widths, run.device)  # noqa: E731
    evaluator = PathEvaluator(supernet, code_fn, plain_loader(train_set, s.batch_size, True, cfg.seed, nw),
                              plain_loader(val_set, s.batch_size, False, 0, nw), run.device,
                              recal_bn_iters=s.recal_bn_iters, val_batches=None if s.val_batches < 0 else s.val_batches)
    space = supernet.space
    if searcher.memory:
        run.log(f'resuming the search at generation {searcher.epoch} with {len(searcher.memory)} paths scored')
    t0 = time.time()

    def on_scored(key, score):
        run.metrics.write({'stage': 'search', 'generation': searcher.epoch, 'scored': len(searcher.memory),
                           'arch': space.arch_str(*key), 'score': score})

    def on_generation(srch):
        epoch, best, mean = srch.history[-1]
        run.log(f'search generation {epoch + 1}/{srch.max_epoch}: best {best:.2f}%, generation mean {mean:.2f}%, '
                f'{len(srch.memory)} paths scored')
        run.metrics.write({'stage': 'search_generation', 'generation': epoch, 'best': best, 'mean': mean})
        save(srch)

    for _ in progress([0], desc='evolutionary search'):
        searcher.search(evaluator, callback=on_scored, on_generation=on_generation)
    run.log(f'search: {len(searcher.memory)} paths scored in {time.time() - t0:.1f}s')
    top = searcher.top(s.show_top)
    lines = [f'top-{len(top)} paths (score = supernet top-1 after BN recalibration, lam = simplex code):']
    for key, score in top:
        arch, widths = list(key[0]), None if key[1] is None else list(key[1])
        params, macs = space.cost(arch, widths)
        lines.append(f'  {space.arch_str(arch, widths)}  score {score:.2f}%  {params / 1e6:.3f}M params  '
                     f'{macs / 1e6:.2f}M MACs  lam {_fmt_code(code_fn(arch, widths))}')
    run.log('\n'.join(lines))
    (arch, widths), score = top[0][0], top[0][1]
    arch, widths = list(arch), None if widths is None else list(widths)
    params, macs = space.cost(arch, widths)
    uniform = PathEvaluator(supernet, lambda a, w: trainer.uniform_code(run.device), evaluator.bn_loader,
                            evaluator.val_loader, run.device, s.recal_bn_iters, evaluator.val_batches)((arch, widths))
    result = {'arch': space.arch_str(arch, widths), 'score': score, 'params': params, 'macs': macs,
              'random_mean': searcher.history[0][2], 'uniform_code_score': uniform,
              'top': [(space.arch_str(*k), v) for k, v in top]}
    run.log_metrics({'stage': 'result', **{k: v for k, v in result.items() if k != 'top'}})
    return result


def headline_supernet(cfg, result):
    if not result:
        return 'K-shot NAS: the search ran on rank 0'
    return (f'K-shot NAS (K={cfg.model.K}) best path {result["arch"]}: {result["params"] / 1e6:.3f}M params, '
            f'{result["macs"] / 1e6:.2f}M MACs, supernet top-1 {result["score"]:.2f}% on {cfg.data.name} '
            f'(random paths {result["random_mean"]:.2f}%; same path with uniform code '
            f'{result["uniform_code_score"]:.2f}%)')


def stage_search(cfg, run):
    path = Path(cfg.search.checkpoint) if cfg.search.checkpoint else Path(run.output_dir) / 'last.pth'
    state = load_checkpoint(str(path))
    for key in ('supernet', 'simplex', 'trainer'):
        if key not in state:
            raise CheckpointError(f"'{path}' is not a K-shot supernet checkpoint (no '{key}' entry)")
    train_set, val_set, classes = datasets(cfg)
    supernet, simplex_net = build_models(cfg, classes)
    load_state_dict(supernet, state['supernet'], what='supernet')
    load_state_dict(simplex_net, state['simplex'], what='simplex')
    supernet.to(run.device)
    simplex_net.to(run.device)
    trainer = make_trainer(cfg, supernet, simplex_net, 1)
    trainer.iter = state['trainer']['iter']
    searcher = make_searcher(cfg, supernet)
    own = Path(run.output_dir) / 'last.pth'
    if own.is_file() and own.resolve() != path.resolve() and cfg.resume:
        mine = load_checkpoint(str(own))
        if mine.get('searcher'):
            searcher.load_state_dict(mine['searcher'])
    result = None
    if run.is_main:
        result = run_search(cfg, run, supernet, simplex_net, trainer, searcher, train_set, val_set,
                            save=lambda s: save_rank0(run, {'supernet': supernet.state_dict(),
                                                            'simplex': simplex_net.state_dict(),
                                                            'trainer': trainer.state_dict(), 'epoch': 0,
                                                            'searcher': s.state_dict()}))
    dist.barrier()
    return result


# --------------------------------------------------------------------------------------------- retrain / test
class ModelEma:
    """Exponential moving average of a model's parameters and buffers (EMA 0.9999 in the retraining recipe)."""

    def __init__(self, model, decay):
        import copy
        self.module = copy.deepcopy(model).eval()
        self.decay = decay
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model):
        for e, m in zip(self.module.state_dict().values(), model.state_dict().values()):
            if e.dtype.is_floating_point:
                e.mul_(self.decay).add_(m.detach(), alpha=1 - self.decay)
            else:
                e.copy_(m)

    def state_dict(self):
        return self.module.state_dict()

    def load_state_dict(self, state):
        self.module.load_state_dict(state)


def build_standalone(cfg, classes):
    arch, widths = parse_path(cfg)
    m = cfg.model
    net = StandaloneNet(arch, widths, classes, cfg.retrain.dropout, [tuple(s) for s in m.stages], m.ops,
                        m.stem_channels, m.first_channels, m.last_channels, m.stem_stride, m.act, m.stem_act)
    return net, arch, widths


@torch.no_grad()
def evaluate(model, loader, device):
    model.eval()
    correct = torch.zeros(2, device=device)
    count = torch.zeros(1, device=device)
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        out = model(x)
        top5 = out.topk(min(5, out.shape[1]), 1).indices
        correct[0] += (top5[:, 0] == y).sum()
        correct[1] += (top5 == y[:, None]).any(1).sum()
        count += y.shape[0]
    if dist.get_world_size() > 1:
        correct, count = dist.all_reduce_mean(correct), dist.all_reduce_mean(count)
    return (100 * correct / count).tolist()


def stage_retrain(cfg, run):
    r = cfg.retrain
    train_set = make_dataset(cfg, 'train', True, retrain=True)
    test_set = make_dataset(cfg, cfg.data.test_split, False)
    model, arch, widths = build_standalone(cfg, _num_classes(train_set))
    space = build_space_only(cfg)
    space.num_classes = _num_classes(train_set)
    params, macs = space.cost(arch, widths)
    run.log(f'retrain {space.arch_str(arch, widths)}: {params / 1e6:.3f}M params, {macs / 1e6:.2f}M MACs')
    model.to(run.device)
    optimizer = torch.optim.SGD(supernet_param_groups(model, r.weight_decay, r.no_wd_bn_bias), lr=r.lr,
                                momentum=r.momentum, nesterov=r.nesterov)
    ema = ModelEma(model, r.ema_decay) if r.ema_decay > 0 else None
    ddp = dist.wrap_ddp(model, run.device)
    loader = build_loader(train_set, r.batch_size, shuffle=True, drop_last=True, num_workers=cfg.data.num_workers,
                          seed=cfg.seed)
    test_loader = build_loader(test_set, r.batch_size, shuffle=False, drop_last=False,
                               num_workers=cfg.data.num_workers, seed=cfg.seed)
    state = run.resume(model=model, optimizer=optimizer, ema=ema)
    best = state.get('best_acc', 0.0) if state else 0.0
    total, warm = r.epochs * len(loader), r.warmup_epochs * len(loader)
    top1 = top5 = 0.0
    for epoch in range(run.start_epoch, r.epochs):
        set_epoch(loader, epoch)
        ddp.train()
        meter = AverageMeter('loss')
        bar = progress(loader, desc=f'retrain {epoch}')
        for i, (x, y) in enumerate(bar):
            lr = set_lr(optimizer, cosine_lr(epoch * len(loader) + i, total, r.lr, warm, r.min_lr))
            x, y = x.to(run.device), y.to(run.device)
            loss = F.cross_entropy(ddp(x), y, label_smoothing=r.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if ema is not None:
                ema.update(model)
            meter.update(loss.item(), y.shape[0])
            update_progress(bar, loss=meter.avg, lr=lr)
        top1, top5 = evaluate(ema.module if ema is not None else model, test_loader, run.device)
        is_best = top1 > best
        best = max(best, top1)
        run.log_metrics({'stage': 'retrain', 'epoch': epoch, 'loss': meter.avg, 'top1': top1, 'top5': top5,
                         'best_top1': best})
        run.save({'model': model.state_dict(), 'optimizer': optimizer.state_dict(),
                  'ema': ema.state_dict() if ema is not None else None, 'epoch': epoch + 1, 'best_acc': best},
                 is_best=is_best)
    return (f'retrained {space.arch_str(arch, widths)} ({params / 1e6:.3f}M params, {macs / 1e6:.2f}M MACs): '
            f'best top-1 {best:.2f}% (last epoch {top1:.2f}% / top-5 {top5:.2f}%) on {cfg.data.name}')


def stage_test(cfg, run):
    test_set = make_dataset(cfg, cfg.data.test_split, False)
    model, arch, widths = build_standalone(cfg, _num_classes(test_set))
    path = Path(cfg.retrain.checkpoint) if cfg.retrain.checkpoint else Path(run.output_dir) / 'best.pth'
    state = load_checkpoint(str(path))
    weights = state.get('ema') or state.get('model') if isinstance(state, dict) else None
    if weights is None:
        raise CheckpointError(f"'{path}' holds no 'model' or 'ema' weights of a retrained network")
    load_state_dict(model, weights, what='model')
    model.to(run.device)
    loader = build_loader(test_set, cfg.retrain.batch_size, shuffle=False, drop_last=False,
                          num_workers=cfg.data.num_workers, seed=cfg.seed)
    top1, top5 = evaluate(model, loader, run.device)
    run.log_metrics({'stage': 'test', 'top1': top1, 'top5': top5})
    return f'test {build_space_only(cfg).arch_str(arch, widths)}: top-1 {top1:.2f}%, top-5 {top5:.2f}% ({path.name})'


# --------------------------------------------------------------------------------------------- main
def main(argv=None):
    cfg = parse_cli(DEFAULTS, argv, description='K-shot NAS: K-shot supernets + simplex-net, evolutionary search')
    validate(cfg)
    run = setup_run(cfg)
    if cfg.stage == 'retrain':
        return run.finish(stage_retrain(cfg, run))
    if cfg.stage == 'test':
        return run.finish(stage_test(cfg, run))
    result = stage_supernet(cfg, run) if cfg.stage == 'supernet' else stage_search(cfg, run)
    run.finish(headline_supernet(cfg, result))
    return result


if __name__ == '__main__':
    guard(main)
