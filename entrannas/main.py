"""EnTranNAS main job: ``python main.py --cfg cfg.yaml [--opts key=value ...]``.

Tasks (``task``):
  search          search with the Engine-/Transit-cell super-net (``search.mode``: entrannas | dst | darts) and
                  report the derived genotype;
  train           train a genotype (``train.arch``) from scratch with the DARTS CIFAR protocol;
  train_imagenet  the same with the mobile ImageNet network and recipe;
  search_train    search, then train the derived genotype (the embedded default, end to end).
Resumes from ``<output_dir>/last.pth`` (the checkpoint records the phase). Multi-process:
``torchrun --nproc_per_node=N main.py --cfg ...`` (gloo on CPU, nccl on CUDA).
"""
import time

import torch
import torch.nn as nn

from common import dist
from common.checkpoint import load_state_dict
from common.config import parse_cli
from common.data import DATASET_STATS, build_dataset, build_loader, labeled_subset, set_epoch
from common.errors import CheckpointError, ConfigError, guard
from common.runner import setup_run

import train as eval_loop
import train_search
from architect import Architect
from genotypes import parse_genotype
from model import NetworkCIFAR
from model_search import MODES, Network
from operations import PRIMITIVES, PRIMITIVES_NO_NONE
from train_imagenet import build_model as build_imagenet_model, imagenet_transforms
from utils import Cutout, count_parameters

DEFAULTS = {
    'output_dir': 'output/entrannas',
    'seed': 2,
    'device': 'auto',
    'resume': True,
    'task': 'search',                 # search | train | train_imagenet | search_train
    'data': {
        'name': 'cifar10',            # common.data: synthetic, cifar10, imagefolder (ImageNet), ...
        'root': None,
        'image_size': 32,
        'num_classes': 10,            # synthetic only
        'train_size': 5000,           # synthetic only
        'test_size': 1000,            # synthetic only
        'num_workers': 0,
        'test_split': 'test',         # 'val' for an ImageNet folder
    },
    'search': {                       # quark0/darts train_search.py flags + EnTranNAS switches
        'mode': 'entrannas',          # entrannas (top-2 rule) | dst (differentiable sparsification) | darts
        'engine_cells': None,         # null: [0, layers//3] (darts: every cell) [A]
        'feature_sharing': True,      # one op set per source node [P,S]; false = DARTS per-edge ops
        'tau': 1.0,                   # softmax temperature [A]
        'dst_drop_none': True,        # dst: drop `none` from the candidates [A]
        'alpha_init': 'normal',       # normal: 1e-3 N(0,1) as quark0/darts | zeros: as the DARTS paper
        'stem': 'cifar',              # cifar | imagenet (three stride-2 convs, PC-DARTS ImageNet search)
        'batch_size': 64,
        'learning_rate': 0.025,
        'learning_rate_min': 0.001,
        'momentum': 0.9,
        'weight_decay': 3e-4,
        'epochs': 50,
        'warmup_epochs': 0,
        'init_channels': 16,
        'layers': 8,
        'grad_clip': 5.0,
        'train_portion': 0.5,         # first half of the train split: weights; second half: architecture
        'train_per_class': 0,         # > 0: per-class sampled search split instead (ImageNet: 10% / 2.5%)
        'valid_per_class': 0,
        'unrolled': False,            # second-order architecture gradient
        'arch_learning_rate': 3e-4,
        'arch_weight_decay': 1e-3,
        'arch_start_epoch': 0,        # architecture updates from this epoch on (PC-DARTS ImageNet: 35)
    },
    'train': {                        # quark0/darts train.py / train_imagenet.py flags
        'arch': 'DARTS_V2',           # genotype name or Genotype(...)/FlexGenotype(...) (search_train: searched)
        'batch_size': 96,
        'learning_rate': 0.025,
        'learning_rate_min': 0.0,
        'momentum': 0.9,
        'weight_decay': 3e-4,
        'epochs': 600,
        'init_channels': 36,
        'layers': 20,
        'auxiliary': True,
        'auxiliary_weight': 0.4,
        'cutout': True,
        'cutout_length': 16,
        'drop_path_prob': 0.2,
        'grad_clip': 5.0,
        'label_smoothing': 0.0,
        'lr_scheduler': 'cosine',     # cosine (DARTS CIFAR) | step (DARTS ImageNet) | linear (PC-DARTS ImageNet)
        'decay_period': 1,
        'gamma': 0.97,
        'warmup_epochs': 0,
        'color_jitter': False,        # ImageNet ColorJitter(0.4, 0.4, 0.4, 0.2)
        'share_features': False,      # evaluation cell with one op per (src, op) [A]
    },
}

TASKS = ('search', 'train', 'train_imagenet', 'search_train')
CIFAR10_STATS = ((0.49139968, 0.48215827, 0.44653124), (0.24703233, 0.24348505, 0.26158768))


# --------------------------------------------------------------------------------------------- config
def _check(cond, key, msg):
    if not cond:
        raise ConfigError(f"config key '{key}' {msg}")


def validate(cfg):
    s, t = cfg.search, cfg.train
    _check(cfg.task in TASKS, 'task', f'must be one of {", ".join(TASKS)}, got {cfg.task!r}')
    _check(s.mode in MODES, 'search.mode', f'must be one of {", ".join(MODES)}, got {s.mode!r}')
    _check(s.stem in ('cifar', 'imagenet'), 'search.stem', f'must be cifar or imagenet, got {s.stem!r}')
    _check(s.alpha_init in ('normal', 'zeros'), 'search.alpha_init', f'must be normal or zeros, got {s.alpha_init!r}')
    _check(t.lr_scheduler in ('cosine', 'step', 'linear'), 'train.lr_scheduler',
           f'must be cosine, step or linear, got {t.lr_scheduler!r}')
    positive = {'data.image_size': cfg.data.image_size, 'search.batch_size': s.batch_size, 'search.epochs': s.epochs,
                'search.init_channels': s.init_channels, 'search.layers': s.layers, 'search.tau': s.tau,
                'search.grad_clip': s.grad_clip, 'train.batch_size': t.batch_size, 'train.epochs': t.epochs,
                'train.init_channels': t.init_channels, 'train.layers': t.layers, 'train.grad_clip': t.grad_clip,
                'train.cutout_length': t.cutout_length, 'train.decay_period': t.decay_period}
    for key, v in positive.items():
        _check(v > 0, key, f'must be > 0, got {v!r}')
    nonneg = {'search.learning_rate': s.learning_rate, 'search.learning_rate_min': s.learning_rate_min,
              'search.momentum': s.momentum, 'search.weight_decay': s.weight_decay,
              'search.arch_learning_rate': s.arch_learning_rate, 'search.arch_weight_decay': s.arch_weight_decay,
              'search.warmup_epochs': s.warmup_epochs, 'search.arch_start_epoch': s.arch_start_epoch,
              'search.train_per_class': s.train_per_class, 'search.valid_per_class': s.valid_per_class,
              'train.learning_rate': t.learning_rate, 'train.learning_rate_min': t.learning_rate_min,
              'train.momentum': t.momentum, 'train.weight_decay': t.weight_decay,
              'train.auxiliary_weight': t.auxiliary_weight, 'train.gamma': t.gamma,
              'train.warmup_epochs': t.warmup_epochs, 'data.num_workers': cfg.data.num_workers}
    for key, v in nonneg.items():
        _check(v >= 0, key, f'must be >= 0, got {v!r}')
    _check(0 < s.train_portion < 1, 'search.train_portion', f'must lie in (0, 1), got {s.train_portion!r}')
    _check(0 <= t.drop_path_prob < 1, 'train.drop_path_prob', f'must lie in [0, 1), got {t.drop_path_prob!r}')
    _check(0 <= t.label_smoothing < 1, 'train.label_smoothing', f'must lie in [0, 1), got {t.label_smoothing!r}')
    _check(s.layers >= 3 and t.layers >= 3, 'search.layers' if s.layers < 3 else 'train.layers',
           'must be >= 3 (two reduction cells at layers//3 and 2*layers//3)')
    _check((s.train_per_class > 0) == (s.valid_per_class > 0), 'search.valid_per_class',
           'and search.train_per_class must both be > 0 or both be 0')
    if s.engine_cells is not None:
        ok = isinstance(s.engine_cells, (list, tuple)) and all(isinstance(i, int) and 0 <= i < s.layers
                                                              for i in s.engine_cells)
        _check(ok, 'search.engine_cells', f'must be null or a list of cell indices in 0..{s.layers - 1}, '
                                          f'got {s.engine_cells!r}')
    size = cfg.data.image_size
    if cfg.task in ('search', 'search_train'):
        f = 32 if s.stem == 'imagenet' else 4
        _check(size % f == 0, 'data.image_size', f'must be a multiple of {f} for the {s.stem} search stem '
                                                 f'(two reductions{" after three stride-2 convs" if f == 32 else ""})')
    if cfg.task in ('train', 'search_train'):
        _check(size % 4 == 0, 'data.image_size', 'must be a multiple of 4 (two reduction cells)')
        _check(not t.auxiliary or size >= 32, 'train.auxiliary',
               f'needs data.image_size >= 32 (the CIFAR auxiliary head pools 5x5 on size/4 maps), got {size}')
    if cfg.task == 'train_imagenet':
        _check(size % 32 == 0, 'data.image_size', 'must be a multiple of 32 for the ImageNet network')
        _check(not t.auxiliary or size >= 112, 'train.auxiliary',
               f'needs data.image_size >= 112 for the ImageNet auxiliary head, got {size}')
    if cfg.task in ('train', 'train_imagenet'):
        try:
            parse_genotype(t.arch)
        except ValueError as e:
            raise ConfigError(f"config key 'train.arch': {e}") from None


# --------------------------------------------------------------------------------------------- data
def _imagenet_like(cfg):
    return cfg.data.name in ('imagefolder', 'imagenet')


def transforms(cfg, cutout=False, cutout_length=16, color_jitter=False):
    """(train, test) transforms: DARTS CIFAR pipeline (+ Cutout after normalisation), or the ImageNet one."""
    import torchvision.transforms as T
    if _imagenet_like(cfg):
        mean, std = DATASET_STATS['imagenet']
        return imagenet_transforms(cfg.data.image_size, color_jitter, mean, std)
    mean, std = CIFAR10_STATS if cfg.data.name == 'cifar10' else DATASET_STATS.get(cfg.data.name,
                                                                                  DATASET_STATS['cifar10'])
    size = cfg.data.image_size
    train = [T.RandomCrop(size, padding=size // 8), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(mean, std)]
    if cutout:
        train.append(Cutout(cutout_length))
    return T.Compose(train), T.Compose([T.ToTensor(), T.Normalize(mean, std)])


def make_dataset(cfg, split, transform):
    options = {}
    if cfg.data.name == 'synthetic':
        options = dict(num_classes=cfg.data.num_classes, image_size=cfg.data.image_size,
                       train_size=cfg.data.train_size, test_size=cfg.data.test_size, seed=cfg.seed)
    return build_dataset(cfg.data.name, cfg.data.root, split=split, transform=transform, **options)


def search_split(cfg, ds):
    """(weight indices, architecture indices): the two parts of the training split used by the search."""
    s = cfg.search
    if s.train_per_class > 0:  # PC-DARTS ImageNet: a per-class sample, split into train / val per class
        idx = labeled_subset(ds, num_per_class=s.train_per_class + s.valid_per_class, seed=cfg.seed)
        by_class = {}
        for i in idx:
            by_class.setdefault(ds.targets[i], []).append(i)
        train_idx = [i for c in sorted(by_class) for i in by_class[c][:s.train_per_class]]
        valid_idx = [i for c in sorted(by_class) for i in by_class[c][s.train_per_class:]]
        return train_idx, valid_idx
    split = int(s.train_portion * len(ds))  # quark0/darts: first portion / the rest of the train split
    return list(range(split)), list(range(split, len(ds)))


# --------------------------------------------------------------------------------------------- search
def build_supernet(cfg, classes):
    s = cfg.search
    primitives = PRIMITIVES_NO_NONE if s.mode == 'dst' and s.dst_drop_none else PRIMITIVES
    model = Network(s.init_channels, classes, s.layers, nn.CrossEntropyLoss(), mode=s.mode,
                    engine_cells=s.engine_cells, feature_sharing=s.feature_sharing, tau=s.tau,
                    primitives=primitives, stem=s.stem)
    if s.alpha_init == 'zeros':
        with torch.no_grad():
            model.alphas_normal.zero_()
            model.alphas_reduce.zero_()
        model.derive()
    return model


def derived_params(cfg, genotype, classes):
    """Parameters (without the auxiliary head) of the evaluation network of ``genotype`` (train.* sizes)."""
    t = cfg.train
    if cfg.task == 'train_imagenet' or _imagenet_like(cfg):
        net = build_imagenet_model(t, classes, genotype)
    else:
        net = NetworkCIFAR(t.init_channels, classes, t.layers, t.auxiliary, genotype, share_features=t.share_features)
    return count_parameters(net)


def describe_dst(model):
    """Thresholds t_j and in-degrees of the DST cells (log line)."""
    out = []
    for kind in ('normal', 'reduce'):
        t = torch.sigmoid(getattr(model, f'betas_{kind}')).tolist()
        derived = getattr(model, f'_derived_{kind}')
        deg = [sum(1 for _, _, d in derived if d == j) for j in range(2, 2 + len(t))]
        out.append(f'{kind}: t=[{", ".join(f"{x:.3f}" for x in t)}] in-degree={deg} pairs={len(derived)}')
    return '; '.join(out)


def stage_search(cfg, run, state):
    s = cfg.search
    train_tf, test_tf = transforms(cfg, color_jitter=_imagenet_like(cfg))
    ds = make_dataset(cfg, 'train', train_tf)
    ds_eval = make_dataset(cfg, 'train', test_tf)
    classes = len(ds.classes)
    train_idx, valid_idx = search_split(cfg, ds)
    sub = torch.utils.data.Subset
    train_queue = build_loader(sub(ds, train_idx), s.batch_size, shuffle=True, drop_last=True,
                               num_workers=cfg.data.num_workers, seed=cfg.seed)
    valid_queue = build_loader(sub(ds, valid_idx), s.batch_size, shuffle=True, drop_last=True,
                               num_workers=cfg.data.num_workers, seed=cfg.seed + 1)
    eval_queue = build_loader(sub(ds_eval, valid_idx), s.batch_size, shuffle=False, drop_last=False,
                              num_workers=cfg.data.num_workers, seed=cfg.seed)

    model = build_supernet(cfg, classes).to(run.device)
    with torch.no_grad():  # every process starts from rank 0's architecture
        for a in model.arch_parameters():
            dist.broadcast(a)
    model.derive()
    optimizer = torch.optim.SGD(model.parameters(), s.learning_rate, momentum=s.momentum,
                                weight_decay=s.weight_decay)
    architect = Architect(model, s)
    start, elapsed = 0, 0.0
    if state is not None and state.get('phase') == 'search':
        load_state_dict(model, state['model'], what='model')
        try:
            model.load_arch_state_dict(state['arch'])
            optimizer.load_state_dict(state['optimizer'])
            architect.optimizer.load_state_dict(state['architect'])
        except (KeyError, ValueError) as e:
            raise CheckpointError(f"'{run.last_path}': the search state does not fit this config: {e}") from None
        start, elapsed = int(state['epoch']), float(state.get('search_time', 0.0))
    ddp_model = dist.wrap_ddp(model, run.device, find_unused_parameters=True)
    criterion = nn.CrossEntropyLoss()
    n_weights = sum(p.numel() for p in model.parameters())
    run.log(f'search: mode={s.mode} engine_cells={model.engine_cells} feature_sharing={s.feature_sharing} '
            f'{len(model.primitives)} candidate ops, {n_weights / 1e6:.3f}M super-net weights, '
            f'{len(train_idx)} weight / {len(valid_idx)} architecture images, {len(train_queue)} steps/epoch')
    valid_iter = train_search.Cycle(valid_queue, epoch=start)
    valid_acc = float('nan')
    for epoch in range(start, s.epochs):
        lr = train_search.epoch_lr(epoch, s.epochs, s.learning_rate, s.learning_rate_min, s.warmup_epochs)
        for g in optimizer.param_groups:
            g['lr'] = lr
        set_epoch(train_queue, epoch)
        t0 = time.time()
        train_acc, train_loss, arch_loss, rate = train_search.train(
            train_queue, valid_iter, model, ddp_model, architect, criterion, optimizer, lr, s, run.device,
            update_arch=epoch >= s.arch_start_epoch, desc=f'search {epoch}')
        elapsed += time.time() - t0
        valid_acc, valid_loss = train_search.infer(eval_queue, model, criterion, run.device)
        genotype = model.genotype()
        run.log_metrics({'phase': 'search', 'epoch': epoch, 'lr': lr, 'train_acc': train_acc,
                         'train_loss': train_loss, 'arch_loss': arch_loss, 'valid_acc': valid_acc,
                         'valid_loss': valid_loss, 'images_per_s': rate, 'time': time.time() - t0,
                         'genotype': str(genotype)})
        if s.mode == 'dst':
            run.log('  ' + describe_dst(model))
        run.save({'phase': 'search', 'epoch': epoch + 1, 'model': model.state_dict(),
                  'arch': model.arch_state_dict(), 'optimizer': optimizer.state_dict(),
                  'architect': architect.optimizer.state_dict(), 'genotype': str(genotype), 'search_time': elapsed})
    if valid_acc != valid_acc:  # nothing left to train (resumed after the last epoch)
        valid_acc, _ = train_search.infer(eval_queue, model, criterion, run.device)
    genotype = model.genotype()
    run.log(f'genotype = {genotype}')
    return {'genotype': str(genotype), 'valid_acc': valid_acc, 'search_time': elapsed,
            'derived_params': derived_params(cfg, genotype, classes), 'mode': s.mode}


# --------------------------------------------------------------------------------------------- train
def stage_train(cfg, run, genotype, state, epoch_offset, search_result=None):
    t = cfg.train
    imagenet = cfg.task == 'train_imagenet'
    train_tf, test_tf = transforms(cfg, cutout=t.cutout, cutout_length=t.cutout_length,
                                   color_jitter=t.color_jitter)
    train_set = make_dataset(cfg, 'train', train_tf)
    test_set = make_dataset(cfg, cfg.data.test_split, test_tf)
    classes = len(train_set.classes)
    if imagenet:
        model = build_imagenet_model(t, classes, genotype)
    else:
        model = NetworkCIFAR(t.init_channels, classes, t.layers, t.auxiliary, genotype,
                             share_features=t.share_features)
    params = count_parameters(model)
    run.log(f'train: {"NetworkImageNet" if imagenet else "NetworkCIFAR"} C={t.init_channels} layers={t.layers} '
            f'{params / 1e6:.3f}M params (without the auxiliary head); genotype = {genotype}')
    model.to(run.device)
    optimizer = torch.optim.SGD(model.parameters(), t.learning_rate, momentum=t.momentum,
                                weight_decay=t.weight_decay)
    start, best = 0, 0.0
    if state is not None and state.get('phase') == 'train' and 'model' in state:
        load_state_dict(model, state['model'], what='model')
        try:
            optimizer.load_state_dict(state['optimizer'])
        except (KeyError, ValueError) as e:
            raise CheckpointError(f"'{run.last_path}': the optimizer state does not fit: {e}") from None
        start, best = int(state['epoch']) - epoch_offset, float(state.get('best_acc', 0.0))
    train_queue = build_loader(train_set, t.batch_size, shuffle=True, drop_last=False,
                               num_workers=cfg.data.num_workers, seed=cfg.seed)
    test_queue = build_loader(test_set, t.batch_size, shuffle=False, drop_last=False,
                              num_workers=cfg.data.num_workers, seed=cfg.seed)

    def save(ckpt, is_best):
        run.save({**ckpt, 'phase': 'train', 'genotype': str(genotype), 'search_result': search_result}, is_best)

    res = eval_loop.run_training(run, model, optimizer, train_queue, test_queue, t, start, save,
                                 epoch_offset=epoch_offset, label_smoothing=t.label_smoothing, best=best)
    res['params'] = params
    return res


# --------------------------------------------------------------------------------------------- main
def main(argv=None):
    cfg = parse_cli(DEFAULTS, argv, description='EnTranNAS: Engine-/Transit-cell differentiable NAS (and DARTS)')
    validate(cfg)
    run = setup_run(cfg)
    state = run.resume()
    data = cfg.data.name
    if cfg.task in ('train', 'train_imagenet'):
        genotype = parse_genotype(cfg.train.arch)
        res = stage_train(cfg, run, genotype, state, 0)
        what = 'top-1' if cfg.task == 'train' else f'top-1 {res["top1"]:.2f}% / top-5'
        value = res['top1'] if cfg.task == 'train' else res['top5']
        run.finish(f'trained {cfg.train.arch if len(str(cfg.train.arch)) < 20 else "genotype"} '
                   f'({res["params"] / 1e6:.3f}M params): last-epoch test {what} {value:.2f}% '
                   f'(error {100 - res["top1"]:.2f}%) on {data}')
        return res

    if state is not None and state.get('phase') == 'train':
        result = state['search_result']
        run.log('search already finished in this output folder: training the derived genotype')
    else:
        result = stage_search(cfg, run, state)
    search_epochs = cfg.search.epochs
    if cfg.task == 'search':
        run.log_metrics({'phase': 'result', **result})
        run.finish(f'EnTranNAS ({result["mode"]}) search on {data}: derived genotype '
                   f'{result["derived_params"] / 1e6:.3f}M params as a {cfg.train.layers}-cell C={cfg.train.init_channels}'
                   f' network; super-net (derived sub-net) valid top-1 {result["valid_acc"]:.2f}%; search '
                   f'{result["search_time"]:.0f}s')
        return result
    if state is None or state.get('phase') == 'search':
        run.save({'phase': 'train', 'epoch': search_epochs, 'genotype': result['genotype'],
                  'search_result': result})
    genotype = parse_genotype(result['genotype'])
    res = stage_train(cfg, run, genotype, state, search_epochs, search_result=result)
    result = {**result, 'test_top1': res['top1'], 'best_top1': res['best_top1'], 'params': res['params']}
    run.log_metrics({'phase': 'result', **result})
    run.finish(f'EnTranNAS ({result["mode"]}) on {data}: searched genotype trained {cfg.train.epochs} epochs -> '
               f'test top-1 {res["top1"]:.2f}% with {res["params"] / 1e6:.3f}M params (search: super-net valid '
               f'top-1 {result["valid_acc"]:.2f}% in {result["search_time"]:.0f}s)')
    return result


if __name__ == '__main__':
    guard(main)
