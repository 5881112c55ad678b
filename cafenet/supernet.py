"""The CafeNet supernet: a plain network made sliceable by channel *sets*, with its searchable width slots.

``CafeSupernet(model, bin_sizes, r=1, input_shape)`` converts the Conv2d / BatchNorm2d / Linear layers of
``model`` to their dynamic versions (``ops.py``) and traces it once (torch.fx) to find which convs must share
a channel set, as BCNet's supernet does:

* a depthwise conv, a BN, an activation or a pooling layer keeps the channel set of its input;
* the operands of an element-wise add (or mul) must be the same channels, so the convs that produce them are
  tied into one group; every group is one searchable *slot*, slots ordered by their first conv (for the
  Channel-Bench-Macro networks exactly the benchmark's 7-digit order).

Slot l has C_l channels in n_l = C_l / b_l units (bins of b_l channels). A width vector c counts units per
slot; a *placement* gives, per slot, the unit set used (a member of S(c_l), ``sharing.candidate_sets``; None
= the contiguous units [0, c_l)). Tied layers reuse the identical set, and every conv takes its input channels
from the set of the slot that feeds it. FLOPs and parameters are counted analytically at the nominal widths
(every placement of a width has the same counts) by the Channel-Bench-Macro rules: conv MACs
Cin*Cout*k^2*Hout*Wout/groups plus FC in*out; params = conv/FC weights and biases + BN gamma/beta.
"""
import copy
import itertools
import math
import operator

import numpy as np
import torch
import torch.fx as fx
import torch.nn as nn

from bins import fix_divisibility, flops_sensitive_bins
from ops import DynamicBatchNorm2d, DynamicConv2d, DynamicLinear, to_dynamic
from sharing import candidate_sets, is_candidate, num_candidates, sample_candidate, units_to_channels

__all__ = ['CafeSupernet']

_BINARY = {operator.add, operator.iadd, operator.mul, operator.imul, torch.add, torch.mul}
_BINARY_METHODS = {'add', 'add_', 'mul', 'mul_'}


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m, qualname):
        return isinstance(m, (nn.Conv2d, nn.BatchNorm2d, nn.Linear)) or super().is_leaf_module(m, qualname)


class CafeSupernet(nn.Module):
    """Supernet with locally free weight sharing.

    ``bin_sizes``: channels per unit, one int per slot, one int for all slots, or ``'flops'`` for the
    FLOPs-sensitive bins (``bins.flops_sensitive_bins`` of ``get_layer_flops()`` with ``min_bin``/``max_bin``,
    a bin never larger than its layer, then ``bins.fix_divisibility`` with ``bin_fallback``).
    ``r``: the free-zone offset, in units of each slot.
    """

    def __init__(self, model, bin_sizes, r=1, input_shape=(3, 32, 32), min_bin=1, max_bin=32,
                 bin_fallback='error'):
        super().__init__()
        if int(r) < 0:
            raise ValueError(f'offset r must be >= 0, got {r}')
        self.model = to_dynamic(model)
        self.r = int(r)
        self.input_shape = tuple(input_shape)
        self._trace()
        self._measure()
        if isinstance(bin_sizes, str):
            if bin_sizes != 'flops':
                raise ValueError(f"bin_sizes must be a list of ints, an int or 'flops', got {bin_sizes!r}")
            raw = flops_sensitive_bins(self.get_layer_flops(), min_bin, max_bin)
            raw = [min(b, C) for b, C in zip(raw, self.slot_channels)]
            bin_sizes = fix_divisibility(raw, self.slot_channels, bin_fallback)
        elif isinstance(bin_sizes, int):
            bin_sizes = [bin_sizes] * self.num_slots
        bin_sizes = [int(b) for b in bin_sizes]
        if len(bin_sizes) != self.num_slots:
            raise ValueError(f'need {self.num_slots} bin sizes (one per slot), got {len(bin_sizes)}')
        for l, (b, C) in enumerate(zip(bin_sizes, self.slot_channels)):
            if b < 1 or C % b != 0:
                raise ValueError(f'slot {l}: bin size {b} does not divide its {C} channels')
        self.bin_sizes = bin_sizes
        self.num_units = [C // b for C, b in zip(self.slot_channels, bin_sizes)]
        self.current = None   # (widths, placement) last set; None: full width

    # ------------------------------------------------------------------ graph
    def _trace(self):
        graph = _Tracer().trace(self.model)
        parent = []

        def find(g):
            while parent[g] != g:
                parent[g] = parent[parent[g]]
                g = parent[g]
            return g

        def union(a, b):
            ra, rb = find(a), find(b)
            parent[max(ra, rb)] = min(ra, rb)
            return min(ra, rb)

        src, convs, bns, linears = {}, [], [], []

        def first(args):
            for a in args:
                if isinstance(a, fx.Node):
                    return src.get(a)
            return None

        for node in graph.nodes:
            if node.op in ('placeholder', 'get_attr', 'output'):
                src[node] = None
                continue
            if node.op == 'call_module':
                m = self.model.get_submodule(node.target)
                g_in = first(node.args)
                if isinstance(m, DynamicConv2d):
                    if m.depthwise:
                        if g_in is None:
                            raise NotImplementedError(f'{node.target}: depthwise conv on the unsliced input')
                        g_out = g_in
                    else:
                        g_out = len(parent)
                        parent.append(g_out)
                    convs.append((node.target, g_in, g_out))
                    src[node] = g_out
                elif isinstance(m, DynamicBatchNorm2d):
                    bns.append((node.target, g_in))
                    src[node] = g_in
                elif isinstance(m, DynamicLinear):
                    linears.append((node.target, g_in))
                    src[node] = None
                else:
                    src[node] = g_in
                continue
            nodes = [a for a in node.args if isinstance(a, fx.Node)]
            binary = (node.op == 'call_function' and node.target in _BINARY) or \
                     (node.op == 'call_method' and node.target in _BINARY_METHODS)
            if node.op == 'call_function' and node.target in (torch.cat, torch.stack):
                raise NotImplementedError('channel concatenation is not supported by this supernet')
            groups = [src.get(a) for a in nodes if src.get(a) is not None]
            if binary and len(groups) == 2:
                src[node] = union(*groups)
            else:
                src[node] = groups[0] if groups else None

        root = {g: find(g) for g in range(len(parent))}
        self.slot_roots = sorted(set(root[g] for _, _, g in convs))
        slot_of = {r: i for i, r in enumerate(self.slot_roots)}

        def slot(g):
            return None if g is None else slot_of[root[g]]

        self.conv_names = [n for n, _, _ in convs]
        self._convs = [(n, slot(gi), slot(go)) for n, gi, go in convs]
        self._bns = [(n, slot(g)) for n, g in bns if g is not None]
        self._linears = [(n, slot(g)) for n, g in linears]
        self.slot_channels = [None] * len(self.slot_roots)
        self.slot_convs = [[] for _ in self.slot_roots]
        for n, _, s in self._convs:
            c = self.model.get_submodule(n).out_channels
            if self.slot_channels[s] is None:
                self.slot_channels[s] = c
            elif self.slot_channels[s] != c:
                raise ValueError(f'{n}: tied to slot {s} of {self.slot_channels[s]} channels but has {c}')
            self.slot_convs[s].append(n)
        for n, s in self._bns:
            if self.model.get_submodule(n).num_features != self.slot_channels[s]:
                raise ValueError(f'{n}: BN width does not match its slot ({self.slot_channels[s]})')

    @torch.no_grad()
    def _measure(self):
        """Output H*W of every conv at ``input_shape`` (one full-width forward pass, eval mode)."""
        hw, hooks = {}, []
        for n in self.conv_names:
            m = self.model.get_submodule(n)
            hooks.append(m.register_forward_hook(lambda mod, i, o, n=n: hw.__setitem__(n, o.shape[2] * o.shape[3])))
        was_training = self.model.training
        self.reset()
        self.model.eval()
        p = next(self.model.parameters())
        try:
            self.model(torch.zeros((1,) + self.input_shape, device=p.device, dtype=p.dtype))
        finally:
            for h in hooks:
                h.remove()
            self.model.train(was_training)
        # per conv: (in slot or None, out slot, k*k, Hout*Wout, depthwise, full in channels, has bias)
        self._conv_info = []
        for n, si, so in self._convs:
            m = self.model.get_submodule(n)
            k2 = m.kernel_size[0] * m.kernel_size[1]
            self._conv_info.append((si, so, k2, hw[n], m.depthwise, m.in_channels, m.bias is not None))
        self._bn_info = [(s, self.model.get_submodule(n).affine) for n, s in self._bns]
        self._lin_info = [(s, self.model.get_submodule(n).in_features, self.model.get_submodule(n).out_features,
                           self.model.get_submodule(n).bias is not None) for n, s in self._linears]

    # ------------------------------------------------------------------ widths and placements
    @property
    def num_slots(self):
        return len(self.slot_roots)

    def full_widths(self):
        return list(self.num_units)

    def _check_widths(self, widths):
        if len(widths) != self.num_slots:
            raise ValueError(f'need {self.num_slots} widths (one per slot), got {len(widths)}')
        c = [int(w) for w in widths]
        for l, (w, n) in enumerate(zip(c, self.num_units)):
            if not 1 <= w <= n:
                raise ValueError(f'slot {l}: width {w} outside [1, {n}] units')
        return c

    def candidate_sets(self, widths):
        """Per slot, S(c_l) (lists of unit tuples)."""
        c = self._check_widths(widths)
        return [candidate_sets(n, w, self.r) for n, w in zip(self.num_units, c)]

    def num_placements(self, widths):
        c = self._check_widths(widths)
        return math.prod(num_candidates(n, w, self.r) for n, w in zip(self.num_units, c))

    def all_placements(self, widths):
        """Every placement of ``widths``: the product of the slots' S(c_l) (list of tuples of unit tuples)."""
        return list(itertools.product(*self.candidate_sets(widths)))

    def sample_placement(self, widths, rng=None):
        """A uniform member of S(c_l) for every slot (``rng``: numpy Generator or seed)."""
        rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        c = self._check_widths(widths)
        return tuple(sample_candidate(n, w, self.r, rng) for n, w in zip(self.num_units, c))

    def eval_placements(self, widths, k, rng=None):
        """The placements that score a width: all of them when there are at most ``k``, else ``k`` distinct
        uniform draws."""
        rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        if self.num_placements(widths) <= k:
            return self.all_placements(widths)
        out = []
        while len(out) < k:
            p = self.sample_placement(widths, rng)
            if p not in out:
                out.append(p)
        return out

    def contiguous_placement(self, widths):
        c = self._check_widths(widths)
        return tuple(tuple(range(w)) for w in c)

    def _placement(self, widths, placement):
        c = self._check_widths(widths)
        if placement is None:
            return self.contiguous_placement(c)
        if len(placement) != self.num_slots:
            raise ValueError(f'need {self.num_slots} unit sets (one per slot), got {len(placement)}')
        out = []
        for l, (units, w, n) in enumerate(zip(placement, c, self.num_units)):
            if not is_candidate(units, n, w, self.r):
                raise ValueError(f'slot {l}: units {tuple(units)} are not in S({w}) of {n} units with r={self.r}')
            out.append(tuple(sorted(int(u) for u in units)))
        return tuple(out)

    def channel_indices(self, widths, placement=None):
        """Per slot, the LongTensor of channels of ``placement`` (default: contiguous) of ``widths``."""
        p = self._placement(widths, placement)
        return [units_to_channels(u, b) for u, b in zip(p, self.bin_sizes)]

    def set_width(self, widths, placement=None):
        """Activate ``widths`` (units per slot) with ``placement`` (a member of S(c_l) per slot; None:
        contiguous, the fixed pattern). ``widths=None`` = the full network."""
        if widths is None:
            return self.reset()
        p = self._placement(widths, placement)
        idx = [units_to_channels(u, b) for u, b in zip(p, self.bin_sizes)]
        for n, si, so in self._convs:
            m = self.model.get_submodule(n)
            m.set_indices(idx[so] if m.depthwise else (None if si is None else idx[si]), idx[so])
        for n, s in self._bns:
            self.model.get_submodule(n).set_indices(idx[s])
        for n, s in self._linears:
            self.model.get_submodule(n).set_indices(None if s is None else idx[s], None)
        self.current = ([int(w) for w in widths], p)

    def reset(self):
        """Back to the full-width network."""
        for m in self.model.modules():
            if isinstance(m, DynamicBatchNorm2d):
                m.set_indices(None)
            elif isinstance(m, (DynamicConv2d, DynamicLinear)):
                m.set_indices(None, None)
        self.current = None

    # ------------------------------------------------------------------ counting
    def _channels_per_slot(self, widths):
        if widths is None:
            return list(self.slot_channels)
        c = self._check_widths(widths)
        return [w * b for w, b in zip(c, self.bin_sizes)]

    def _active_widths(self, widths):
        if widths is not None:
            return widths
        return None if self.current is None else self.current[0]

    def flops(self, widths=None):
        """MACs of ``widths`` (default: the active width) at ``input_shape``: convs + linear layers."""
        w = self._channels_per_slot(self._active_widths(widths))
        total = 0
        for si, so, k2, hw, dw, cin_full, _ in self._conv_info:
            cin = cin_full if si is None else w[si]
            total += (w[so] if dw else cin * w[so]) * k2 * hw
        for s, fin, fout, _ in self._lin_info:
            total += (fin if s is None else w[s]) * fout
        return total

    def params(self, widths=None):
        """Parameter count of ``widths`` (conv/linear weights and biases, BN gamma/beta)."""
        w = self._channels_per_slot(self._active_widths(widths))
        total = 0
        for si, so, k2, _, dw, cin_full, bias in self._conv_info:
            cin = cin_full if si is None else w[si]
            total += (w[so] if dw else cin * w[so]) * k2 + (w[so] if bias else 0)
        for s, affine in self._bn_info:
            total += 2 * w[s] if affine else 0
        for s, fin, fout, bias in self._lin_info:
            total += (fin if s is None else w[s]) * fout + (fout if bias else 0)
        return total

    def get_layer_flops(self):
        """Per slot, the MACs that one channel of the slot adds to the full-width network (F_l of the
        FLOPs-sensitive bins): the filters producing it and the weights reading it, at full width."""
        out = [0.0] * self.num_slots
        C = self.slot_channels
        for si, so, k2, hw, dw, cin_full, _ in self._conv_info:
            if dw:
                out[so] += k2 * hw
                continue
            cin = cin_full if si is None else C[si]
            out[so] += cin * k2 * hw
            if si is not None:
                out[si] += C[so] * k2 * hw
        for s, _, fout, _ in self._lin_info:
            if s is not None:
                out[s] += fout
        return [float(f) for f in out]

    def channels(self, widths=None):
        """Output width of every conv (execution order) under ``widths``."""
        w = self._channels_per_slot(self._active_widths(widths))
        return [w[so] for _, so, *_ in self._conv_info]

    # ------------------------------------------------------------------ export
    def export(self, widths=None, placement=None):
        """A plain ``nn.Module`` copy of the network at ``widths``/``placement`` with the gathered weights
        (default: the active setting)."""
        if widths is not None:
            self.set_width(widths, placement)
        net = copy.deepcopy(self.model)
        for name, m in list(net.named_modules()):
            new = _fold(m)
            if new is not None:
                parent, _, attr = name.rpartition('.')
                setattr(net.get_submodule(parent) if parent else net, attr, new)
        return net

    def forward(self, x):
        return self.model(x)


def _cut(t, idx, dim=0):
    if t is None:
        return None
    t = t.detach()
    return (t if idx is None else t.index_select(dim, idx)).clone()


@torch.no_grad()
def _fold(m):
    if isinstance(m, DynamicConv2d):
        cin, cout = m.active_channels()
        groups = cout if m.depthwise else 1
        new = nn.Conv2d(cin, cout, m.kernel_size, m.stride, m.padding, m.dilation, groups, m.bias is not None)
        w = _cut(m.weight, m.out_indices, 0)
        new.weight.copy_(w if m.depthwise else _cut(w, m.in_indices, 1))
        if m.bias is not None:
            new.bias.copy_(_cut(m.bias, m.out_indices))
    elif isinstance(m, DynamicBatchNorm2d):
        n = m.num_features if m.indices is None else m.indices.numel()
        new = nn.BatchNorm2d(n, m.eps, m.momentum, m.affine, m.track_running_stats)
        for name in ('weight', 'bias'):
            if getattr(m, name) is not None:
                getattr(new, name).copy_(_cut(getattr(m, name), m.indices))
        if m.track_running_stats:
            new.running_mean.copy_(_cut(m.running_mean, m.indices))
            new.running_var.copy_(_cut(m.running_var, m.indices))
            new.num_batches_tracked.copy_(m.num_batches_tracked)
    elif isinstance(m, DynamicLinear):
        n_in = m.in_features if m.in_indices is None else m.in_indices.numel()
        new = nn.Linear(n_in, m.out_features, m.bias is not None)
        new.weight.copy_(_cut(m.weight, m.in_indices, 1))
        if m.bias is not None:
            new.bias.copy_(m.bias)
    else:
        return None
    new.train(m.training)
    return new
