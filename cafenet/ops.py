"""Dynamic layers of the CafeNet supernet, sliced by *index tensors*.

A locally free width is a non-contiguous channel set (base channels plus free channels somewhere in the free
zone), the "list of intervals" case that the authors' edgenn toolbox left unimplemented. Each layer therefore
holds the weights of its full width and, after ``set_indices``, runs on the channels listed in a LongTensor
(``None`` = all). Contiguous index lists take a ``narrow`` (a view), others an ``index_select`` (a gather whose
backward scatters into the full weight). The classes subclass their ``torch.nn`` counterparts, so the
``state_dict`` keys are those of the plain network.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ['DynamicConv2d', 'DynamicBatchNorm2d', 'DynamicLinear', 'to_dynamic', 'frozen_bn_stats']


def _prepare(idx, n, what, device):
    """(LongTensor on ``device``, (start, length) when contiguous else None), or (None, None) for all."""
    if idx is None:
        return None, None
    t = torch.as_tensor(idx, dtype=torch.long).reshape(-1)
    if t.numel() == 0:
        raise ValueError(f'{what}: empty channel set')
    lo, hi = int(t.min()), int(t.max())
    if lo < 0 or hi >= n:
        raise ValueError(f'{what}: channel indices outside [0, {n})')
    if torch.unique(t).numel() != t.numel():
        raise ValueError(f'{what}: repeated channel indices')
    contiguous = hi - lo + 1 == t.numel() and bool((t[1:] > t[:-1]).all()) if t.numel() > 1 else True
    return t.to(device), ((lo, t.numel()) if contiguous else None)


def _take(w, idx, span, dim):
    if idx is None:
        return w
    if span is not None:
        return w.narrow(dim, span[0], span[1])
    return w.index_select(dim, idx)


class DynamicConv2d(nn.Conv2d):
    """``nn.Conv2d`` that convolves with ``weight[out_idx][:, in_idx]``.

    A depthwise conv (``groups == in_channels == out_channels``) has one filter per channel, so its input and
    output sets must be the same set (it is tied to the layer that feeds it); the active groups are its channels.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.depthwise = self.groups > 1 and self.groups == self.in_channels == self.out_channels
        if self.groups > 1 and not self.depthwise:
            raise ValueError('DynamicConv2d supports plain (groups=1) and depthwise convolutions only')
        self.in_indices = self.out_indices = None
        self._in_span = self._out_span = None

    def set_indices(self, in_idx=None, out_idx=None):
        dev = self.weight.device
        i, i_span = _prepare(in_idx, self.in_channels, 'DynamicConv2d input', dev)
        o, o_span = _prepare(out_idx, self.out_channels, 'DynamicConv2d output', dev)
        if self.depthwise and not ((i is None and o is None) or (i is not None and o is not None and torch.equal(i, o))):
            raise ValueError('depthwise conv: the input and output channel sets must be identical')
        self.in_indices, self._in_span, self.out_indices, self._out_span = i, i_span, o, o_span

    def active_channels(self):
        cin = self.in_channels if self.in_indices is None else self.in_indices.numel()
        cout = self.out_channels if self.out_indices is None else self.out_indices.numel()
        return cin, cout

    def forward(self, x):
        if self.in_indices is None and self.out_indices is None:
            return super().forward(x)
        w = _take(self.weight, self.out_indices, self._out_span, 0)
        b = None if self.bias is None else _take(self.bias, self.out_indices, self._out_span, 0)
        if self.depthwise:
            groups = w.shape[0]
        else:
            groups = 1
            w = _take(w, self.in_indices, self._in_span, 1)
        return F.conv2d(x, w, b, self.stride, self.padding, self.dilation, groups)


class DynamicBatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` on a channel set: gamma, beta and running statistics of those channels.

    In training mode the running statistics of the active channels are updated in place (written back with
    ``index_copy_``; the others stay untouched); ``momentum=None`` is the cumulative average of BN recalibration.
    With ``freeze_stats = True`` training mode normalises with the batch statistics but leaves every buffer as it
    is (the grad-free scoring passes of the min-min step).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.indices = None
        self._span = None
        self.freeze_stats = False

    def set_indices(self, idx=None):
        self.indices, self._span = _prepare(idx, self.num_features, 'DynamicBatchNorm2d',
                                            self.running_mean.device if self.running_mean is not None
                                            else self.weight.device)

    def forward(self, x):
        if self.indices is None and not self.freeze_stats:
            return super().forward(x)
        self._check_input_dim(x)
        idx, span = self.indices, self._span
        w = None if self.weight is None else _take(self.weight, idx, span, 0)
        b = None if self.bias is None else _take(self.bias, idx, span, 0)
        use_batch = self.training or not self.track_running_stats
        if self.training and self.freeze_stats:
            return F.batch_norm(x, None, None, w, b, True, 0.0, self.eps)
        if not self.track_running_stats:
            return F.batch_norm(x, None, None, w, b, True, 0.0, self.eps)
        factor = 0.0
        if self.training:
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        if idx is None or span is not None:      # views: F.batch_norm updates the buffers in place
            rm = _take(self.running_mean, idx, span, 0)
            rv = _take(self.running_var, idx, span, 0)
            return F.batch_norm(x, rm, rv, w, b, use_batch, factor, self.eps)
        rm, rv = self.running_mean.index_select(0, idx), self.running_var.index_select(0, idx)
        out = F.batch_norm(x, rm, rv, w, b, use_batch, factor, self.eps)
        if self.training:
            with torch.no_grad():
                self.running_mean.index_copy_(0, idx, rm)
                self.running_var.index_copy_(0, idx, rv)
        return out


class DynamicLinear(nn.Linear):
    """``nn.Linear`` on a set of its input features (its outputs, the classes, are never searched)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.in_indices, self._in_span = None, None

    def set_indices(self, in_idx=None, out_idx=None):
        if out_idx is not None:
            raise ValueError('DynamicLinear: the output features of a linear layer are not searchable')
        self.in_indices, self._in_span = _prepare(in_idx, self.in_features, 'DynamicLinear input',
                                                  self.weight.device)

    def forward(self, x):
        if self.in_indices is None:
            return super().forward(x)
        return F.linear(x, _take(self.weight, self.in_indices, self._in_span, 1), self.bias)


class frozen_bn_stats:
    """Context manager: every ``DynamicBatchNorm2d`` of ``module`` keeps its running statistics unchanged."""

    def __init__(self, module):
        self.bns = [m for m in module.modules() if isinstance(m, DynamicBatchNorm2d)]

    def __enter__(self):
        self.prev = [m.freeze_stats for m in self.bns]
        for m in self.bns:
            m.freeze_stats = True
        return self

    def __exit__(self, *exc):
        for m, p in zip(self.bns, self.prev):
            m.freeze_stats = p
        return False


def _convert(m):
    """A dynamic copy of one plain layer that shares its parameters and buffers."""
    if isinstance(m, nn.Conv2d) and not isinstance(m, DynamicConv2d):
        new = DynamicConv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding, m.dilation,
                            m.groups, m.bias is not None, m.padding_mode, device=m.weight.device,
                            dtype=m.weight.dtype)
    elif isinstance(m, nn.BatchNorm2d) and not isinstance(m, DynamicBatchNorm2d):
        new = DynamicBatchNorm2d(m.num_features, m.eps, m.momentum, m.affine, m.track_running_stats)
    elif isinstance(m, nn.Linear) and not isinstance(m, DynamicLinear):
        new = DynamicLinear(m.in_features, m.out_features, m.bias is not None, device=m.weight.device,
                            dtype=m.weight.dtype)
    else:
        return None
    for name, p in m.named_parameters(recurse=False):
        setattr(new, name, p)
    for name, buf in m.named_buffers(recurse=False):
        setattr(new, name, buf)
    new.train(m.training)
    return new


def to_dynamic(module):
    """Replace, in place, every Conv2d / BatchNorm2d / Linear of ``module`` by its dynamic version.

    Parameters and buffers are shared, so ``state_dict`` keys and values are unchanged. Returns ``module``.
    """
    for name, child in list(module.named_children()):
        new = _convert(child)
        if new is not None:
            setattr(module, name, new)
        else:
            to_dynamic(child)
    return module
