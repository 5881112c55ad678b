"""The bilaterally coupled supernet: a plain network made sliceable, with its searchable width slots.

``BCNetSupernet(model, channel_bins, min_channel_bins, input_shape)`` converts the Conv2d / BatchNorm2d /
Linear layers of ``model`` to their dynamic versions (``ops.py``) and traces the network once (torch.fx) to
find which convs must share a width, as the official ``EdgeNNGraph`` does:

* a depthwise conv, a BN, an activation or a pooling layer keeps the width of its input;
* the outputs of an element-wise add (or mul) must have the same width, so the convs that produce them are
  tied into one group; the first conv of a group (in execution order) names it;
* every group is one searchable *slot*; slots are ordered by their first conv (for the Channel-Bench-Macro
  networks this is exactly the 7-digit order).

A choice per slot is a width ``c`` (bins [0, c), the left path) or a bin interval ``[lo, hi]`` (e.g. the
right path [B - c, B)). Channels follow the official index rule (``sampler.bilateral_indices``); each conv
takes its input slice from the slot of its input. FLOPs and parameters of any choice are counted
analytically from the traced graph (no forward pass), by the Channel-Bench-Macro rules: conv MACs
Cin*Cout*k^2*Hout*Wout/groups plus FC in*out; params = conv/FC weights and biases + BN gamma/beta.
"""
import copy
import operator

import torch
import torch.fx as fx
import torch.nn as nn

from ops import DynamicBatchNorm2d, DynamicConv2d, DynamicLinear, to_dynamic
from sampler import bilateral_indices, width_range

__all__ = ['BCNetSupernet']

_BINARY = {operator.add, operator.iadd, operator.mul, operator.imul, torch.add, torch.mul}
_BINARY_METHODS = {'add', 'add_', 'mul', 'mul_'}


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m, qualname):
        return isinstance(m, (nn.Conv2d, nn.BatchNorm2d, nn.Linear)) or super().is_leaf_module(m, qualname)


class BCNetSupernet(nn.Module):
    def __init__(self, model, channel_bins, min_channel_bins=1, input_shape=(3, 32, 32)):
        super().__init__()
        width_range(channel_bins, min_channel_bins)  # validates the pair
        self.model = to_dynamic(model)
        self.channel_bins, self.min_channel_bins = int(channel_bins), int(min_channel_bins)
        self.input_shape = tuple(input_shape)
        self._trace()
        self._measure()
        self.current = None   # per-slot bin intervals last set (None: full width)

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

    # ------------------------------------------------------------------ choices
    @property
    def num_slots(self):
        return len(self.slot_roots)

    def get_channel_choices(self):
        """[[min_bins, channel_bins]] per slot (the official ``get_channel_choices``)."""
        return [[self.min_channel_bins, self.channel_bins] for _ in self.slot_roots]

    def _intervals(self, choices):
        if len(choices) != self.num_slots:
            raise ValueError(f'need {self.num_slots} choices (one per slot), got {len(choices)}')
        out = []
        for c in choices:
            if isinstance(c, (list, tuple)):
                out.append([int(c[0]), int(c[1])])
            else:
                out.append([0, int(c)])
        return out

    def slices(self, choices):
        """Per-slot channel slices (start, stop) of ``choices``."""
        return [bilateral_indices(C, self.channel_bins, iv)
                for C, iv in zip(self.slot_channels, self._intervals(choices))]

    def set_channel_choices(self, choices):
        """Activate ``choices`` (a width c or a bin interval [lo, hi] per slot); ``None`` = full width."""
        if choices is None:
            return self.reset()
        sl = self.slices(choices)
        for (n, si, so) in self._convs:
            m = self.model.get_submodule(n)
            m.set_indices(sl[so] if m.depthwise else (None if si is None else sl[si]), sl[so])
        for n, s in self._bns:
            self.model.get_submodule(n).set_indices(sl[s])
        for n, s in self._linears:
            self.model.get_submodule(n).set_indices(None if s is None else sl[s], None)
        self.current = self._intervals(choices)

    def reset(self):
        """Back to the full-width network."""
        for m in self.model.modules():
            if isinstance(m, DynamicBatchNorm2d):
                m.set_indices(None)
            elif isinstance(m, (DynamicConv2d, DynamicLinear)):
                m.set_indices(None, None)
        self.current = None

    def full_choices(self):
        return [[0, self.channel_bins] for _ in self.slot_roots]

    # ------------------------------------------------------------------ counting
    def _widths(self, choices):
        if choices is None:
            return list(self.slot_channels)
        return [b - a for a, b in self.slices(choices)]

    def flops(self, choices=None):
        """MACs of ``choices`` (default: the active choice) at ``input_shape``: convs + linear layers."""
        w = self._widths(self.current if choices is None else choices)
        total = 0
        for si, so, k2, hw, dw, cin_full, _ in self._conv_info:
            cin = cin_full if si is None else w[si]
            total += (w[so] if dw else cin * w[so]) * k2 * hw
        for s, fin, fout, _ in self._lin_info:
            total += (fin if s is None else w[s]) * fout
        return total

    def params(self, choices=None):
        """Parameter count of ``choices`` (conv/linear weights and biases, BN gamma/beta)."""
        w = self._widths(self.current if choices is None else choices)
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
        """Per slot, the full-width MACs of the first conv that produces the slot's channels."""
        out = [None] * self.num_slots
        for si, so, k2, hw, dw, cin_full, _ in self._conv_info:
            if out[so] is None:
                C = self.slot_channels[so]
                out[so] = float((C if dw else cin_full * C) * k2 * hw)
        return out

    def channels(self, choices=None):
        """Output width of every conv (execution order) under ``choices``."""
        w = self._widths(self.current if choices is None else choices)
        return [w[so] for _, so, *_ in self._conv_info]

    # ------------------------------------------------------------------ export
    def export(self, choices=None):
        """A plain ``nn.Module`` copy of the network at ``choices`` with the sliced supernet weights."""
        if choices is not None:
            self.set_channel_choices(choices)
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
    if idx is None:
        return t.detach().clone()
    return t.detach().narrow(dim, idx[0], idx[1] - idx[0]).clone()


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
        n = m.num_features if m.indices is None else m.indices[1] - m.indices[0]
        new = nn.BatchNorm2d(n, m.eps, m.momentum, m.affine, m.track_running_stats)
        for name in ('weight', 'bias'):
            if getattr(m, name) is not None:
                getattr(new, name).copy_(_cut(getattr(m, name), m.indices))
        if m.track_running_stats:
            new.running_mean.copy_(_cut(m.running_mean, m.indices))
            new.running_var.copy_(_cut(m.running_var, m.indices))
            new.num_batches_tracked.copy_(m.num_batches_tracked)
    elif isinstance(m, DynamicLinear):
        n_in = m.in_features if m.in_indices is None else m.in_indices[1] - m.in_indices[0]
        new = nn.Linear(n_in, m.out_features, m.bias is not None)
        new.weight.copy_(_cut(m.weight, m.in_indices, 1))
        if m.bias is not None:
            new.bias.copy_(m.bias)
    else:
        return None
    new.train(m.training)
    return new
