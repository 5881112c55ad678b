"""DyRep: grow the most important kxk conv into a DBB, cut the branches that stopped mattering (card Sec. 1, 4-6).

Usage, inside any training loop (card Sec. 7)::

    dyrep = DyRep(model, optimizer, recal_bn_fn=lambda m: recal_bn(model, loader, 20, m))
    ...  loss.backward(); dyrep.record_metrics(); optimizer.step()   # every iteration
    ...  report = dyrep.adjust_model()                                # every `adjust_interval` epochs

``model`` is the bare module (not the DDP wrapper): re-wrap DDP after each adjustment.
"""
import logging
import random

import torch
import torch.distributed as dist
import torch.nn as nn

from dbb import DiverseBranchBlock, KXK

logger = logging.getLogger(__name__)

GROW_METRICS = ('synflow', 'grad_norm', 'snip', 'random')


def get_module(model, path):
    """The submodule at a dotted ``path`` (``''`` is the model itself), or None."""
    m = model
    for key in path.split('.') if path else []:
        if not hasattr(m, key):
            return None
        m = getattr(m, key)
    return m


def split_path(path):
    """``'a.b.c'`` -> ``('a.b', 'c')``; a top-level name has the empty parent path."""
    i = path.rfind('.')
    return (path[:i], path[i + 1:]) if i >= 0 else ('', path)


def is_growable(name, module):
    """Card Sec. 1: a square kxk (k > 1) ``nn.Conv2d`` whose dotted name holds 'dbb' fewer than two times.

    Also required here (the DBB cannot represent anything else): dilation 1, zero padding mode, equal
    stride and padding in both axes.
    """
    if not isinstance(module, nn.Conv2d):
        return False
    k = module.kernel_size
    return (k[0] == k[1] and k[0] > 1 and name.count('dbb') < 2
            and isinstance(module.padding, tuple) and module.padding[0] == module.padding[1]
            and module.stride[0] == module.stride[1] and tuple(module.dilation) == (1, 1)
            and module.padding_mode == 'zeros')


def param_groups(model, filter_bias_and_bn=False):
    """Parameters sorted by name: one list, or ``[no_decay, decay]`` (1-D tensors and biases undecayed).

    The optimizer must be built from these lists (in this order) for :meth:`DyRep._reset_optimizer` and
    resuming to line up, as in the official ``get_params(..., sort_params=True)``.
    """
    named = sorted(((n, p) for n, p in model.named_parameters() if p.requires_grad), key=lambda x: x[0])
    if not filter_bias_and_bn:
        return [[p for _, p in named]]
    no_decay = [p for n, p in named if p.ndim <= 1 or n.endswith('.bias')]
    decay = [p for n, p in named if not (p.ndim <= 1 or n.endswith('.bias'))]
    return [no_decay, decay]


def _dist_world():
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class DyRep:
    """Dynamic re-parameterization of ``model`` (official ``lib/models/utils/dyrep.py`` API)."""

    def __init__(self, model, optimizer, recal_bn_fn=None, grow_metric='synflow',
                 dbb_branches=(1, 1, 1, 1, 1, 1, 1), filter_bias_and_bn=False, grow_topk=1, cut_threshold=0.1,
                 cut_std_threshold=0.02):
        if grow_metric not in GROW_METRICS:
            raise ValueError(f'grow_metric must be one of {GROW_METRICS}, got {grow_metric!r}')
        if len(dbb_branches) != 7 or not dbb_branches[KXK]:
            raise ValueError(f'dbb_branches must be 7 flags with kxk (index 3) on, got {list(dbb_branches)}')
        if grow_topk < 0:
            raise ValueError(f'grow_topk must be >= 0, got {grow_topk}')
        self.model = model
        self.optimizer = optimizer
        self.recal_bn_fn = recal_bn_fn
        self.grow_metric = grow_metric
        self.dbb_branches = [int(bool(b)) for b in dbb_branches]
        self.filter_bias_and_bn = filter_bias_and_bn
        self.grow_topk = grow_topk
        self.cut_threshold = cut_threshold
        self.cut_std_threshold = cut_std_threshold
        self._metric_sums = {}    # conv name -> sum of per-iteration metric values since the last adjustment
        self._metric_counts = {}
        self._collapsed = []      # blocks cut down to a plain conv with bias (rebuilt on resume)
        self._growable = None     # cache of (name, conv) pairs, invalidated by every structural change
        self.last_growed_module = 'none'

    # ------------------------------------------------------------------------------------------ metric
    def growable_convs(self):
        if self._growable is None:
            self._growable = [(n, m) for n, m in self.model.named_modules() if is_growable(n, m)]
        return self._growable

    @torch.no_grad()
    def record_metrics(self):
        """Accumulate each growable conv's metric; call after ``backward()``, before ``optimizer.step()``.

        ``synflow`` (default): the signed sum of grad * weight. ``grad_norm``: ||grad||_2.
        ``snip``: sum |grad * weight|. ``random``: U(0, 1).
        """
        names, values = [], []
        for name, m in self.growable_convs():
            g = m.weight.grad
            if g is None:
                continue
            names.append(name)
            if self.grow_metric == 'synflow':
                values.append((g * m.weight).sum())
            elif self.grow_metric == 'snip':
                values.append((g * m.weight).abs().sum())
            elif self.grow_metric == 'grad_norm':
                values.append(g.norm())
            else:
                values.append(torch.tensor(random.random(), device=g.device))
        if not names:
            return
        for name, v in zip(names, torch.stack([v.float() for v in values]).tolist()):
            self._metric_sums[name] = self._metric_sums.get(name, 0.0) + v
            self._metric_counts[name] = self._metric_counts.get(name, 0) + 1

    def metric_averages(self):
        """Per-conv mean over the iterations since the last adjustment, averaged over ranks."""
        names = sorted(self._metric_sums)
        if not names:
            return {}
        means = torch.tensor([self._metric_sums[n] / self._metric_counts[n] for n in names], dtype=torch.float64)
        world = _dist_world()
        if world > 1:
            backend_device = 'cuda' if dist.get_backend() == 'nccl' else 'cpu'
            means = means.to(backend_device)
            dist.all_reduce(means)
            means = means.cpu() / world
        return dict(zip(names, means.tolist()))

    # ------------------------------------------------------------------------------------------ grow
    def grow(self, conv_name):
        """Replace the conv at ``conv_name`` by a DBB computing the same function (card Sec. 4)."""
        parent_path, key = split_path(conv_name)
        parent = get_module(self.model, parent_path)
        conv = getattr(parent, key, None) if parent is not None else None
        if not is_growable(conv_name, conv):
            raise ValueError(f'{conv_name!r} is not a growable conv of the model')
        block = DiverseBranchBlock(conv.in_channels, conv.out_channels, conv.kernel_size[0], stride=conv.stride[0],
                                   groups=conv.groups, padding=conv.padding[0], branches=self.dbb_branches)
        block = block.to(device=conv.weight.device, dtype=conv.weight.dtype)
        block.train(conv.training)
        setattr(parent, key, block)
        block.reset_from_kernel(conv.weight, conv.bias, recal_bn_fn=self.recal_bn_fn)
        if conv_name in self._collapsed:
            self._collapsed.remove(conv_name)
        self._growable = None
        self.last_growed_module = conv_name
        logger.info('grow: %s -> branches %s', conv_name, block.branches)
        return block

    # ------------------------------------------------------------------------------------------ cut
    def cut_decision(self, weights):
        """Card Sec. 5: keep-mask for one block's branch weights, or None when nothing is cut.

        ``V`` = weights of the non-kxk branches except values equal to -1 (inactive) or 1; if std(V) (unbiased)
        exceeds ``cut_std_threshold``, cut every active branch with ``w < mean(V)`` and ``w < cut_threshold``.
        """
        valid = [w for i, w in enumerate(weights) if i != KXK and w not in (-1, 1)]
        if len(valid) < 2:
            return None  # the std of a single value is NaN: nothing is cut
        v = torch.tensor(valid, dtype=torch.float64)
        if not v.std() > self.cut_std_threshold:
            return None
        mean = v.mean().item()
        keep = [1] * 7
        need_cut = False
        for i, w in enumerate(weights):
            if i != KXK and w < mean and w < self.cut_threshold:
                keep[i] = 0
                need_cut = need_cut or w != -1
        return keep if need_cut else None

    def cut(self, block_name, keep):
        """Remove branches of the block at ``block_name``; one left (kxk only) -> a plain conv with bias."""
        block = get_module(self.model, block_name)
        kept_active = [i for i in range(7) if keep[i] and block.branches[i]]
        if kept_active == [KXK]:
            parent_path, key = split_path(block_name)
            with torch.no_grad():
                w, b = block.get_actual_kernel()
                conv = nn.Conv2d(block.in_channels, block.out_channels, block.kernel_size, stride=block.stride,
                                 padding=block.padding, groups=block.groups, bias=True).to(w)
                conv.weight.copy_(w)
                conv.bias.copy_(b)
            conv.train(block.training)
            setattr(get_module(self.model, parent_path), key, conv)
            self._collapsed.append(block_name)
        else:
            block.cut_branch(keep)
        self._growable = None

    # ------------------------------------------------------------------------------------------ adjust
    def adjust_model(self):
        """Grow the top-``grow_topk`` conv(s) by average metric, then cut branches of every DBB (card Sec. 1, 5).

        Returns ``{'metric': [(name, avg), ...] (descending), 'grown': [names], 'grown_branches': {name: flags},
        'removed': [grown names no longer in the model], 'cut': [(name, weights, keep)],
        'branch_weights': {block: weights}}``. A block grown inside a branch of its parent is gone again when
        that branch is cut in the same adjustment (the official order: grow first, then cut every block).
        """
        ranking = sorted(self.metric_averages().items(), key=lambda item: item[1], reverse=True)
        grown, grown_branches = [], {}
        for name, _ in ranking[:self.grow_topk]:
            grown_branches[name] = list(self.grow(name).branches)
            grown.append(name)
        self._metric_sums, self._metric_counts = {}, {}

        cut, all_weights = [], {}
        for name, m in list(self.model.named_modules()):
            if not isinstance(m, DiverseBranchBlock) or m.deployed or get_module(self.model, name) is not m:
                continue  # deployed, or removed together with a branch of its parent cut just before
            weights = m.branch_weights()
            all_weights[name] = weights
            keep = self.cut_decision(weights)
            if keep is not None:
                self.cut(name, keep)
                cut.append((name, weights, keep))
                logger.info('cut: %s, weights %s, new branches %s', name, weights, keep)
        self._reset_optimizer()
        removed = [n for n in grown if not isinstance(get_module(self.model, n), DiverseBranchBlock)]
        return {'metric': ranking, 'grown': grown, 'grown_branches': grown_branches, 'removed': removed,
                'cut': cut, 'branch_weights': all_weights}

    def _reset_optimizer(self):
        """Point the optimizer's groups at the current parameters (same group layout, names sorted); drop
        the state of removed parameters; new parameters start with empty state."""
        if self.optimizer is None:
            return
        groups = param_groups(self.model, self.filter_bias_and_bn)
        if len(groups) != len(self.optimizer.param_groups):
            if len(self.optimizer.param_groups) == 1:
                groups = [[p for g in groups for p in g]]
            else:
                raise ValueError(f'DyRep: the optimizer has {len(self.optimizer.param_groups)} param groups; '
                                 f'expected {len(groups)} (filter_bias_and_bn={self.filter_bias_and_bn})')
        for params, group in zip(groups, self.optimizer.param_groups):
            alive = set(params)
            for p in group['params']:
                if p not in alive:
                    self.optimizer.state.pop(p, None)
            group['params'] = params

    # ------------------------------------------------------------------------------------------ state
    def dbb_graph(self):
        """``[(module_path, branches), ...]`` of every DBB, pre-order (parents before nested blocks)."""
        graph = []

        def visit(module, prefix):
            for key, child in module.named_children():
                path = f'{prefix}.{key}' if prefix else key
                if isinstance(child, DiverseBranchBlock):
                    graph.append((path, list(child.branches)))
                visit(child, path)

        visit(self.model, '')
        return graph

    def load_dbb_graph(self, graph):
        """Rebuild the DBBs of ``graph`` in a clean (freshly built) model, before loading its state dict."""
        if not graph:
            return
        if any(isinstance(m, DiverseBranchBlock) for m in self.model.modules()):
            raise ValueError('load_dbb_graph needs a clean model (it already holds DiverseBranchBlocks)')
        for path, branches in graph:
            parent_path, key = split_path(path)
            parent = get_module(self.model, parent_path)
            conv = getattr(parent, key, None) if parent is not None else None
            if not isinstance(conv, nn.Conv2d):
                raise ValueError(f'dbb_graph entry {path!r} does not name a conv of this model')
            block = DiverseBranchBlock(conv.in_channels, conv.out_channels, conv.kernel_size[0],
                                       stride=conv.stride[0], groups=conv.groups, padding=conv.padding[0],
                                       branches=branches)
            block = block.to(device=conv.weight.device, dtype=conv.weight.dtype)
            block.train(conv.training)
            setattr(parent, key, block)
        self._growable = None
        self._reset_optimizer()

    def _load_collapsed(self, paths):
        for path in paths:
            parent_path, key = split_path(path)
            parent = get_module(self.model, parent_path)
            conv = getattr(parent, key, None) if parent is not None else None
            if not isinstance(conv, nn.Conv2d):
                raise ValueError(f'collapsed entry {path!r} does not name a conv of this model')
            if conv.bias is None:
                conv.bias = nn.Parameter(torch.zeros(conv.out_channels, device=conv.weight.device,
                                                     dtype=conv.weight.dtype))
        self._collapsed = list(paths)
        self._growable = None
        self._reset_optimizer()

    def state_dict(self):
        return {'dbb_graph': self.dbb_graph(), 'collapsed': list(self._collapsed),
                'metric_records': {n: (self._metric_sums[n], self._metric_counts[n]) for n in self._metric_sums}}

    def load_state_dict(self, state_dict):
        if 'dbb_graph' in state_dict:
            self.load_dbb_graph(state_dict['dbb_graph'])
        self._load_collapsed(state_dict.get('collapsed', []))
        records = state_dict.get('metric_records', {})
        self._metric_sums = {n: float(s) for n, (s, _) in records.items()}
        self._metric_counts = {n: int(c) for n, (_, c) in records.items()}
