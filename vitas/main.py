"""ViTAS pipeline: ``python main.py --cfg cfg.yaml [--opts key=value ...]``.

Stages (``stages`` key, run in this order, each resumable from ``last.pth``):

* ``search``  -- identity-probability search (``prop_search``) for the FLOPs window, then supernet
  training (BCNet: one loss on left + right logits of one sampled subnet per step; AutoSlim; cyclic).
* ``sample``  -- evolutionary search (NSGA-II, single objective) of the best in-budget subnet with the
  supernet weights; prints its ``net_id`` and decoded dims.
* ``retrain`` -- the searched net (or ``retrain.net_id`` / ``retrain.arch``) trained stand-alone.
* ``test``    -- top-1 / top-5 of the retrained net.

Ends by printing the searched net's accuracy, params and official-counter FLOPs.
Multi-process: ``torchrun --nproc_per_node=N main.py --cfg ...`` (gloo on CPU, nccl on CUDA).
"""
import os
import random

import torch

from common.checkpoint import load_checkpoint
from common.config import parse_cli
from common.data import DATASET_STATS, build_dataset, build_loader, set_epoch
from common.dist import unwrap, wrap_ddp
from common.errors import CheckpointError, ConfigError, guard
from common.log import progress, update_progress
from common.runner import setup_run
from common.schedule import cosine_lr

import train as T
from flops import count_flops, expected_flops
from model import MODELS, ViTASNet, build_from_net_id
from search import EvolutionSampler, prop_search
from subnet import Subnet, decode_net_id, encode_net_id, generate_subnet, shift_identity
from supernet import SIDE_SCHEMES, ViTASSuperNet

STAGES = ('search', 'sample', 'retrain', 'test')

DEFAULTS = {
    'output_dir': 'output/vitas',
    'seed': 0,
    'device': 'auto',
    'resume': True,
    'data': {'name': 'synthetic', 'root': None, 'image_size': 32, 'num_classes': 10,
             'train_size': 4000, 'test_size': 1000, 'background': 'texture',  # synthetic: texture|plain
             'num_workers': 0},
    'stages': ['search', 'sample', 'retrain', 'test'],
    'official_compat': False,        # reproduce the official bugs (Pitfalls 1-3)
    'channel_percent': [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0],
    'flops_min': 900000000.0,        # FLOPs window of the official counter (MACs)
    'flops_constraint': 1000000000.0,
    'supernet': {'patch_sizes': [14, 16, 32], 'embed_dim': 384, 'depth': 16,
                 'heads': [3, 6, 12, 16], 'at_temp': 1440, 'mlp_dim': 1440, 'id_op': True,
                 'qkv': 2},
    'search': {                      # supernet training
        'epochs': 300, 'batch_size': 64, 'lr': 0.001, 'weight_decay': 0.05, 'warmup_epochs': 5,
        'side_scheme': 'BCNet',      # BCNet | AutoSlim | cyclic (v2, provisional)
        'augmentation': 'weak',      # weak | deit | none
        'mix_up': True, 'mixup_stg': 'cutmix', 'smoothing': 0.1,
        'search_id': True,           # run prop_search (else id_prop = 0.5)
        'ps_num': 1000, 'prop_step': 0.01,
        'identity_shift': False,     # v2 identity shifting (provisional reconstruction)
        'max_steps_per_epoch': 0,    # 0 = whole epoch
        'eval_batches': 0,           # batches of the per-epoch monitor (0 = whole test split)
    },
    'sample': {                      # evolutionary search
        'pop_size': 50, 'n_gens': 40, 'mutation_eta': 3, 'crossover_prob': 0.9,
        'cal_train_mode': True, 'batch_size': 128, 'val_batches': 0,
        'supernet_ckpt': '',         # supernet weights when the search stage is not run
    },
    'retrain': {
        'epochs': 300, 'batch_size': 64, 'lr': 0.001, 'weight_decay': 0.05, 'warmup_epochs': 5,
        'drop_path_rate': 0.1, 'augmentation': 'deit', 'mix_up': False, 'mixup_stg': 'all',
        'smoothing': 0.1,
        'init': 'scratch',           # scratch (paper) | inherit (fine-tune the extracted weights)
        'arch': '',                  # a released model (ViTAS-A ... DeiT-S) instead of the search
        'net_id': '', 'model_len': 0,
        'max_steps_per_epoch': 0,
    },
    'test': {'batch_size': 128, 'checkpoint': ''},
}


# ----------------------------------------------------------------------------- validation
def validate(cfg):
    bad = [s for s in cfg.stages if s not in STAGES]
    if bad or not cfg.stages:
        raise ConfigError(f"stages: unknown or empty {bad or cfg.stages}; choose from {list(STAGES)}")
    cp = cfg.channel_percent
    if not cp or any(not 0 < r <= 1 for r in cp) or sorted(set(cp)) != list(cp):
        raise ConfigError(f'channel_percent must be increasing ratios in (0, 1], got {cp}')
    s = cfg.supernet
    if not s.patch_sizes or any(p <= 0 or cfg.data.image_size % p for p in s.patch_sizes):
        raise ConfigError(f'supernet.patch_sizes {s.patch_sizes} must divide data.image_size '
                          f'{cfg.data.image_size}')
    if s.at_temp % 3 or s.at_temp <= 0:
        raise ConfigError(f'supernet.at_temp (q+k+v width) must be a positive multiple of 3, got '
                          f'{s.at_temp}')
    if s.qkv not in (0, 1, 2):
        raise ConfigError(f'supernet.qkv must be 0, 1 or 2, got {s.qkv}')
    if not s.heads or any(h <= 0 for h in s.heads) or s.depth < 1 or s.embed_dim < 1:
        raise ConfigError('supernet.heads, supernet.depth and supernet.embed_dim must be positive')
    q_max = s.at_temp // 3
    for r in cp:
        q = round(q_max * r)
        if round(2 * q_max * r) != 2 * q or round(3 * q_max * r) != 3 * q:
            raise ConfigError(f'supernet.at_temp {s.at_temp} with channel ratio {r}: the q/k/v widths '
                              f'round(Q r), round(2 Q r), round(3 Q r) must be 1:2:3 (Pitfall 5)')
        for h in s.heads:
            if q == 0 or q % h:
                raise ConfigError(f'supernet.heads: {h} heads do not divide the q width {q} '
                                  f'(at_temp {s.at_temp}, ratio {r})')
        if round(s.embed_dim * r) == 0 or round(s.mlp_dim * r) == 0:
            raise ConfigError(f'channel ratio {r} gives a zero width for supernet.embed_dim/mlp_dim')
    if not 0 <= cfg.flops_min < cfg.flops_constraint:
        raise ConfigError(f'need 0 <= flops_min < flops_constraint, got {cfg.flops_min}, '
                          f'{cfg.flops_constraint}')
    for sec in ('search', 'retrain'):
        c = cfg[sec]
        if c.epochs < 0 or c.batch_size < 1 or c.lr <= 0 or c.warmup_epochs < 0:
            raise ConfigError(f'{sec}: epochs >= 0, batch_size >= 1, lr > 0, warmup_epochs >= 0')
        if c.augmentation not in ('weak', 'deit', 'none'):
            raise ConfigError(f"{sec}.augmentation must be weak, deit or none, got {c.augmentation!r}")
        if c.mixup_stg not in ('cutmix', 'mixup', 'all'):
            raise ConfigError(f"{sec}.mixup_stg must be cutmix, mixup or all, got {c.mixup_stg!r}")
        if not 0 <= c.smoothing < 1:
            raise ConfigError(f'{sec}.smoothing must be in [0, 1), got {c.smoothing}')
    if cfg.search.side_scheme not in SIDE_SCHEMES:
        raise ConfigError(f'search.side_scheme must be one of {list(SIDE_SCHEMES)}, got '
                          f'{cfg.search.side_scheme!r}')
    if cfg.sample.pop_size < 2 or cfg.sample.n_gens < 1 or cfg.sample.batch_size < 1:
        raise ConfigError('sample: pop_size >= 2, n_gens >= 1, batch_size >= 1')
    if cfg.retrain.init not in ('scratch', 'inherit'):
        raise ConfigError(f"retrain.init must be scratch or inherit, got {cfg.retrain.init!r}")
    if cfg.retrain.arch and cfg.retrain.arch not in MODELS:
        raise ConfigError(f"retrain.arch {cfg.retrain.arch!r} is not one of {sorted(MODELS)}")
    if not 0 <= cfg.retrain.drop_path_rate < 1:
        raise ConfigError(f'retrain.drop_path_rate must be in [0, 1), got {cfg.retrain.drop_path_rate}')
    if cfg.retrain.net_id:
        try:
            decode_net_id(cfg.retrain.net_id, cfg.retrain.model_len, cp, len(s.heads))
        except ValueError as e:
            raise ConfigError(f'retrain.net_id / retrain.model_len: {e}') from None


# ----------------------------------------------------------------------------- helpers
def space_config(cfg, num_classes):
    s = cfg.supernet
    return dict(patch_sizes=tuple(s.patch_sizes), embed_dim=s.embed_dim, depth=s.depth,
                heads=tuple(s.heads), at_temp=s.at_temp, mlp_dim=s.mlp_dim,
                num_classes=num_classes, id_op=s.id_op, img_size=cfg.data.image_size)


class InMemory(torch.utils.data.Dataset):
    """Synthetic images rendered once and kept (drawing them is the slow part on a CPU); the
    transform is applied on every access."""

    def __init__(self, items, targets, classes, transform):
        self.items, self.targets, self.classes, self.transform = items, targets, classes, transform

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        img, y = self.items[i]
        return self.transform(img), y


_RENDERED = {}


def build_data(cfg, split, aug):
    d = cfg.data
    mean, std = DATASET_STATS.get(d.name, (T.IMAGENET_MEAN, T.IMAGENET_STD))
    tf = {'weak': lambda: T.build_supernet_aug(True, d.image_size, mean, std),
          'deit': lambda: T.build_deit_aug(d.image_size, mean, std),
          'none': lambda: T.build_test_aug(d.image_size, mean, std),
          'test': lambda: T.build_test_aug(d.image_size, mean, std)}[aug]()
    if d.name != 'synthetic':
        return build_dataset(d.name, d.root, split, tf)
    key = (split, d.num_classes, d.image_size, d.train_size, d.test_size, d.background, cfg.seed)
    if key not in _RENDERED:
        ds = build_dataset('synthetic', None, split, None, num_classes=d.num_classes,
                           image_size=d.image_size, train_size=d.train_size,
                           test_size=d.test_size, seed=cfg.seed, background=d.background)
        _RENDERED[key] = ([ds[i] for i in range(len(ds))], ds.targets, ds.classes)
    return InMemory(*_RENDERED[key], tf)


def lr_schedule(c, steps_per_epoch):
    total, warm = c.epochs * steps_per_epoch, c.warmup_epochs * steps_per_epoch
    return lambda step: cosine_lr(step, total, c.lr, warmup_steps=warm)


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def steps_in(loader, c):
    return min(len(loader), c.max_steps_per_epoch) if c.max_steps_per_epoch else len(loader)


# ----------------------------------------------------------------------------- stages
class Pipeline:
    def __init__(self, cfg, run):
        self.cfg, self.run, self.device = cfg, run, run.device
        self.ckpt = {'epoch': 0, 'progress': {'search': 0, 'sample': 0, 'retrain': 0, 'test': 0},
                     'results': {}}
        self.num_classes = None
        state = run.resume()
        if state is not None:
            self.ckpt.update(state)
        self.test_ds = build_data(cfg, 'test', 'test')
        self.num_classes = len(self.test_ds.classes)
        self.space = space_config(cfg, self.num_classes)
        self.cp = tuple(cfg.channel_percent)
        self._supernet = None
        self.test_loader = build_loader(self.test_ds, cfg.sample.batch_size, shuffle=False,
                                        drop_last=False, num_workers=cfg.data.num_workers)

    @property
    def supernet(self):
        """Built on first use (a retrain-only run does not need it)."""
        if self._supernet is None:
            cfg = self.cfg
            self._supernet = ViTASSuperNet(**self.space, qkv=cfg.supernet.qkv,
                                           side_scheme=cfg.search.side_scheme,
                                           official_compat=cfg.official_compat,
                                           channel_percent=self.cp).to(self.device)
            if 'supernet' in self.ckpt:
                self._supernet.load_state_dict(self.ckpt['supernet'])
        return self._supernet

    @property
    def progress(self):
        return self.ckpt['progress']

    def save(self, is_best=False):
        self.ckpt['epoch'] = sum(self.progress.values())
        if self._supernet is not None:
            self.ckpt['supernet'] = self._supernet.state_dict()
        # 'rng' / 'config' of a resumed checkpoint must not shadow the current ones
        self.run.save({k: v for k, v in self.ckpt.items() if k not in ('rng', 'config')},
                      is_best=is_best)

    def log(self, msg):
        self.run.log(msg)

    # ---------------------------------------------------------------- id_prop
    def id_prop(self):
        if 'id_prop' not in self.ckpt:
            c = self.cfg.search
            if not self.space['id_op']:
                self.ckpt['id_prop'] = 0.0
            elif c.search_id:
                e0, e1 = (expected_flops(p, self.space, self.cp) / 1e6 for p in (0, 1))
                self.log(f'expected FLOPs of a random subnet: {e0:.2f}M (id_prop 0) .. '
                         f'{e1:.2f}M (id_prop 1)')
                try:
                    self.ckpt['id_prop'] = prop_search(
                        self.space, self.cfg.flops_min, self.cfg.flops_constraint, c.ps_num,
                        c.prop_step, 0.5, random.Random(self.cfg.seed), self.cp, log=self.log)
                except RuntimeError as e:
                    raise ConfigError(f'flops_min / flops_constraint: {e}') from None
            else:
                self.ckpt['id_prop'] = 0.5
        return self.ckpt['id_prop']

    # ---------------------------------------------------------------- search (supernet training)
    def stage_search(self):
        cfg, c = self.cfg, self.cfg.search
        id_prop = self.id_prop()
        train_ds = build_data(cfg, 'train', c.augmentation)
        loader = build_loader(train_ds, c.batch_size, shuffle=True, drop_last=True,
                              num_workers=cfg.data.num_workers, seed=cfg.seed)
        opt = torch.optim.AdamW(T.param_groups(self.supernet, c.weight_decay), lr=c.lr)
        if 'search_optimizer' in self.ckpt:
            opt.load_state_dict(self.ckpt['search_optimizer'])
        rng = random.Random(cfg.seed)                   # same subnets on every rank
        if 'subnet_rng' in self.ckpt:
            rng.setstate(self.ckpt['subnet_rng'])

        def sample_subnet():
            s = generate_subnet(self.space['depth'], id_prop, self.cp, rng,
                                len(self.space['heads']), len(self.space['patch_sizes']))
            return shift_identity(s) if c.identity_shift else s

        step_module = wrap_ddp(T.SuperNetTrainStep(self.supernet), self.device,
                               find_unused_parameters=True)
        mixup = T.build_mixup(c.mixup_stg, self.num_classes, c.smoothing) if c.mix_up else None
        spe = steps_in(loader, c)
        lr_fn = lr_schedule(c, spe)
        ps, depth, hi, lo = self.space['patch_sizes'], self.space['depth'], self.cp[-1], self.cp[0]
        largest = Subnet(ps.index(min(ps)), hi, [(0, hi, hi)] * depth)     # monitors only
        smallest = Subnet(ps.index(max(ps)), lo, [(0, lo, lo)] * depth)
        for epoch in range(self.progress['search'], c.epochs):
            set_epoch(loader, epoch)
            bar = progress(loader, total=spe, desc=f'supernet {epoch + 1}/{c.epochs}')
            stats = T.train_supernet(
                {'num_classes': self.num_classes, 'smoothing': c.smoothing}, step_module, bar, opt,
                sample_subnet, lr_fn, epoch * spe, self.device, mixup,
                max_steps=c.max_steps_per_epoch or None,
                on_step=lambda b, loss, lr: update_progress(b, loss=loss, lr=lr))
            nb = c.eval_batches or None
            side = self.supernet.score_sides()[0]
            top1_max = T.evaluate(self.supernet, self.test_loader, largest, side, self.device,
                                  max_batches=nb)[0]
            top1_min = T.evaluate(self.supernet, self.test_loader, smallest, side, self.device,
                                  max_batches=nb)[0]
            self.progress['search'] = epoch + 1
            self.ckpt['search_optimizer'] = opt.state_dict()
            self.ckpt['subnet_rng'] = rng.getstate()
            self.run.log_metrics({'stage': 'search', 'epoch': epoch + 1, 'loss': stats['loss'],
                                  'lr': lr_fn((epoch + 1) * spe - 1), 'top1_largest': top1_max,
                                  'top1_smallest': top1_min, 'id_prop': id_prop})
            self.save()

    # ---------------------------------------------------------------- sample (evolution)
    def load_supernet_for_sampling(self):
        if self.progress['search'] > 0 or 'search' in self.cfg.stages or 'supernet' in self.ckpt:
            return
        path = self.cfg.sample.supernet_ckpt
        if not path:
            raise ConfigError('stage sample without search needs sample.supernet_ckpt (a last.pth '
                              'of a search run)')
        state = load_checkpoint(path)
        sd = state.get('supernet', state.get('model')) if isinstance(state, dict) else None
        if sd is None:
            raise CheckpointError(f"'{path}' has no 'supernet' entry")
        try:
            self.supernet.load_state_dict(sd)
        except RuntimeError as e:
            raise CheckpointError(f"'{path}' does not fit the configured supernet: {e}") from None

    def stage_sample(self):
        cfg, c = self.cfg, self.cfg.sample
        self.load_supernet_for_sampling()
        nb = c.val_batches or None

        def evaluator(subnet, side):
            return T.evaluate(self.supernet, self.test_loader, subnet, side, self.device,
                              train_mode=c.cal_train_mode, max_batches=nb)[0]

        sampler = EvolutionSampler(
            self.supernet, evaluator, c.pop_size, c.n_gens, cfg.flops_constraint, cfg.flops_min,
            self.cp, cfg.search.side_scheme, 'two_point', c.mutation_eta, self.id_prop(),
            seed=cfg.seed, identity_shift=cfg.search.identity_shift,
            crossover_prob=c.crossover_prob)
        if 'sampler' in self.ckpt:
            sampler.load_state_dict(self.ckpt['sampler'])
        try:
            if not sampler.done():
                bar = progress(range(sampler.gen, c.n_gens), desc='evolution')
                for _ in bar:
                    sampler.step()
                    h = sampler.history[-1]
                    update_progress(bar, best=h['best_score'], evals=h['n_evals'])
                    self.progress['sample'] = sampler.gen
                    self.ckpt['sampler'] = sampler.state_dict()
                    self.run.log_metrics({'stage': 'sample', 'generation': h['gen'],
                                          'best_score': h['best_score'],
                                          'mean_score': h['mean_score'], 'n_evals': h['n_evals']})
                    self.save()
        except RuntimeError as e:
            raise ConfigError(f'flops_min / flops_constraint: {e}') from None
        subnet, score, flops, _ = sampler.best()
        net_id = encode_net_id(subnet, self.cp, len(self.space['heads']))
        model_len = self.space['depth'] + 3
        net = self.supernet.extract(subnet, self.supernet.score_sides()[0])
        inherited = T.evaluate(net, self.test_loader, device=self.device)[0]
        self.ckpt['best'] = {'net_id': net_id, 'model_len': model_len, 'score': score,
                             'flops': flops}
        self.ckpt['results'].update({'search_score': score, 'inherited_top1': inherited})
        self.log(f'searched net_id ({model_len}): {net_id}')
        self.log(f'searched net: {net.describe()}')
        self.log(f'searched net: supernet score {score:.2f}% (mean of {self.supernet.score_sides()}), '
                 f'extracted-weights top-1 {inherited:.2f}%, FLOPs {flops / 1e6:.3f}M, '
                 f'params {n_params(net) / 1e6:.4f}M')
        self.save()

    # ---------------------------------------------------------------- retrain
    def build_retrain_model(self):
        cfg, c = self.cfg, self.cfg.retrain
        kw = dict(num_classes=self.num_classes, drop_path_rate=c.drop_path_rate,
                  img_size=cfg.data.image_size)
        if c.arch:
            return MODELS[c.arch](**kw), c.arch
        if c.net_id:
            net_id, model_len, name = c.net_id, c.model_len, 'net_id ' + repr(c.net_id)
        elif 'best' in self.ckpt:
            best = self.ckpt['best']
            net_id, model_len, name = best['net_id'], best['model_len'], 'searched net'
        else:
            raise ConfigError('stage retrain needs a searched net (run the sample stage), '
                              'retrain.net_id + retrain.model_len, or retrain.arch')
        if c.init == 'inherit':
            sub = decode_net_id(net_id, model_len, self.cp, len(self.space['heads']))
            if cfg.search.identity_shift:
                sub = shift_identity(sub)
            net = self.supernet.extract(sub, self.supernet.score_sides()[0])
            rates = torch.linspace(0, c.drop_path_rate, len(net.arch)).tolist()
            active = [r for r, b in zip(rates, net.arch) if b is not None]
            for blk, r in zip(net.blocks, active):
                blk.drop_path.drop_prob = r
            return net, name
        return build_from_net_id(net_id, model_len, self.space, self.cp, **kw), name

    def stage_retrain(self):
        cfg, c = self.cfg, self.cfg.retrain
        model, name = self.build_retrain_model()
        model = model.to(self.device)
        if 'retrain_model' in self.ckpt:
            model.load_state_dict(self.ckpt['retrain_model'])
        self.retrained, self.retrained_name = model, name
        train_ds = build_data(cfg, 'train', c.augmentation)
        loader = build_loader(train_ds, c.batch_size, shuffle=True, drop_last=True,
                              num_workers=cfg.data.num_workers, seed=cfg.seed + 1)
        opt = torch.optim.AdamW(T.param_groups(model, c.weight_decay), lr=c.lr)
        if 'retrain_optimizer' in self.ckpt:
            opt.load_state_dict(self.ckpt['retrain_optimizer'])
        ddp = wrap_ddp(model, self.device)
        mixup = T.build_mixup(c.mixup_stg, self.num_classes, c.smoothing) if c.mix_up else None
        spe = steps_in(loader, c)
        lr_fn = lr_schedule(c, spe)
        if self.progress['retrain'] == 0:
            self.log(f'retrain {name}: {model.describe()}; params {n_params(model) / 1e6:.4f}M, '
                     f'FLOPs {count_flops(model) / 1e6:.3f}M')
        for epoch in range(self.progress['retrain'], c.epochs):
            set_epoch(loader, epoch)
            bar = progress(loader, total=spe, desc=f'retrain {epoch + 1}/{c.epochs}')
            stats = T.retrain({'num_classes': self.num_classes, 'smoothing': c.smoothing}, ddp, bar,
                              opt, lr_fn, epoch * spe, self.device, mixup,
                              max_steps=c.max_steps_per_epoch or None,
                              on_step=lambda b, loss, lr: update_progress(b, loss=loss, lr=lr))
            top1, top5 = T.evaluate(model, self.test_loader, device=self.device)
            best = max(self.ckpt['results'].get('retrain_best_top1', -1.), top1)
            is_best = top1 >= best
            self.ckpt['results'].update({'retrain_best_top1': best})
            self.progress['retrain'] = epoch + 1
            self.ckpt['retrain_model'] = unwrap(ddp).state_dict()
            self.ckpt['retrain_optimizer'] = opt.state_dict()
            self.run.log_metrics({'stage': 'retrain', 'epoch': epoch + 1, 'loss': stats['loss'],
                                  'lr': lr_fn((epoch + 1) * spe - 1), 'top1': top1, 'top5': top5})
            self.save(is_best=is_best)

    # ---------------------------------------------------------------- test
    def stage_test(self):
        c = self.cfg.test
        model = getattr(self, 'retrained', None)
        if c.checkpoint:
            model, name = self.build_retrain_model()
            state = load_checkpoint(c.checkpoint)
            sd = state.get('retrain_model', state.get('model', state)) if isinstance(state, dict) else None
            try:
                model.load_state_dict(sd)
            except (RuntimeError, TypeError, AttributeError) as e:
                raise CheckpointError(f"'{c.checkpoint}' does not fit the model: {e}") from None
            self.retrained_name = name
        elif model is None:
            if 'retrain_model' not in self.ckpt:
                raise ConfigError('stage test needs a retrained model (run retrain) or test.checkpoint')
            model, self.retrained_name = self.build_retrain_model()
            model.load_state_dict(self.ckpt['retrain_model'])
        model = model.to(self.device)
        loader = build_loader(self.test_ds, c.batch_size, shuffle=False, drop_last=False,
                              num_workers=self.cfg.data.num_workers)
        top1, top5 = T.evaluate(model, loader, device=self.device)
        self.retrained = model
        self.ckpt['results'].update({'test_top1': top1, 'test_top5': top5,
                                     'params': n_params(model), 'flops': count_flops(model),
                                     'net': self.retrained_name})
        self.progress['test'] = 1
        self.run.log_metrics({'stage': 'test', 'top1': top1, 'top5': top5,
                              'params': n_params(model), 'flops': count_flops(model)})
        self.save()

    # ---------------------------------------------------------------- headline
    def headline(self):
        r = self.ckpt['results']
        parts = []
        if 'best' in self.ckpt:
            b = self.ckpt['best']
            parts.append(f"searched net_id '{b['net_id']}' (supernet score {b['score']:.2f}%, "
                         f"FLOPs {b['flops'] / 1e6:.3f}M)")
        if 'test_top1' in r:
            parts.append(f"{r['net']}: top-1 {r['test_top1']:.2f}% / top-5 {r['test_top5']:.2f}% "
                         f"({self.cfg.data.name} test, final epoch), params {r['params'] / 1e6:.4f}M, "
                         f"FLOPs {r['flops'] / 1e6:.3f}M (official counter)")
        elif self.progress['search']:
            parts.append(f"supernet trained {self.progress['search']} epochs")
        return 'ViTAS: ' + '; '.join(parts)


def main(argv=None):
    cfg = parse_cli(DEFAULTS, argv, description='ViTAS: supernet training, evolution, retraining')
    validate(cfg)
    run = setup_run(cfg)
    pipe = Pipeline(cfg, run)
    for stage in STAGES:
        if stage in cfg.stages:
            getattr(pipe, f'stage_{stage}')()
    return run.finish(pipe.headline())


if __name__ == '__main__':
    guard(main)
