"""Dynamic (sliceable) layers of the BCNet supernet.

Each layer holds the weights of its full width and, after ``set_indices``, runs on a contiguous channel
slice of them. A slice is a half-open pair ``(start, stop)`` of channel indices, or ``None`` for "all".
The official release (``edgenn/models/pruning_ops.py``) stores inclusive ``[start, end]`` pairs; the
semantics are the same. The classes subclass their ``torch.nn`` counterparts, so their ``state_dict`` keys
are those of a plain network: a checkpoint of the supernet loads into the full-width model and back.
"""
import torch.nn as nn
import torch.nn.functional as F

__all__ = ['DynamicConv2d', 'DynamicBatchNorm2d', 'DynamicLinear', 'slice_size', 'to_dynamic']


def _check(idx, n, what):
    if idx is None:
        return None
    start, stop = int(idx[0]), int(idx[1])
    if not 0 <= start < stop <= n:
        raise ValueError(f'{what}: slice ({start}, {stop}) is empty or outside [0, {n})')
    return start, stop


def slice_size(idx, n):
    """Number of channels of slice ``idx`` of a dimension of size ``n``."""
    return n if idx is None else idx[1] - idx[0]


class DynamicConv2d(nn.Conv2d):
    """``nn.Conv2d`` that convolves with ``weight[out_slice, in_slice]``.

    A depthwise conv (``groups == in_channels == out_channels``) keeps one filter per channel, so its input
    and output slices must be the same slice; the active groups are the slice's channels.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.in_indices = None
        self.out_indices = None
        self.depthwise = self.groups > 1 and self.groups == self.in_channels == self.out_channels
        if self.groups > 1 and not self.depthwise:
            raise ValueError('DynamicConv2d supports plain (groups=1) and depthwise convolutions only')

    def set_indices(self, in_indices=None, out_indices=None):
        in_indices = _check(in_indices, self.in_channels, 'DynamicConv2d input')
        out_indices = _check(out_indices, self.out_channels, 'DynamicConv2d output')
        if self.depthwise and in_indices != out_indices:
            raise ValueError(f'depthwise conv: input slice {in_indices} != output slice {out_indices}')
        self.in_indices, self.out_indices = in_indices, out_indices

    def active_channels(self):
        return (slice_size(self.in_indices, self.in_channels), slice_size(self.out_indices, self.out_channels))

    def forward(self, x):
        if self.in_indices is None and self.out_indices is None:
            return super().forward(x)
        w, b = self.weight, self.bias
        if self.out_indices is not None:
            o0, o1 = self.out_indices
            w = w[o0:o1]
            b = b[o0:o1] if b is not None else None
        groups = self.groups
        if self.depthwise:
            groups = w.shape[0]
        elif self.in_indices is not None:
            w = w[:, self.in_indices[0]:self.in_indices[1]]
        return F.conv2d(x, w, b, self.stride, self.padding, self.dilation, groups)


class DynamicBatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` on a channel slice: the slice of gamma, beta and the running mean/var.

    In training mode the running statistics of the active slice are updated in place (the sliced buffers are
    views of the full ones); the rest stay untouched. ``momentum=None`` gives the cumulative average used for
    BN recalibration.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.indices = None

    def set_indices(self, indices=None):
        self.indices = _check(indices, self.num_features, 'DynamicBatchNorm2d')

    def forward(self, x):
        if self.indices is None:
            return super().forward(x)
        self._check_input_dim(x)
        s0, s1 = self.indices
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats:
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        use_batch_stats = self.training or not self.track_running_stats
        rm = self.running_mean[s0:s1] if self.running_mean is not None else None
        rv = self.running_var[s0:s1] if self.running_var is not None else None
        w = self.weight[s0:s1] if self.weight is not None else None
        b = self.bias[s0:s1] if self.bias is not None else None
        return F.batch_norm(x, rm, rv, w, b, use_batch_stats, factor, self.eps)


class DynamicLinear(nn.Linear):
    """``nn.Linear`` on a slice of its input features (its outputs, the classes, are never searched)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.in_indices = None
        self.out_indices = None

    def set_indices(self, in_indices=None, out_indices=None):
        if out_indices is not None:
            raise ValueError('DynamicLinear: the output features of a linear layer are not searchable')
        self.in_indices = _check(in_indices, self.in_features, 'DynamicLinear input')

    def forward(self, x):
        if self.in_indices is None:
            return super().forward(x)
        return F.linear(x, self.weight[:, self.in_indices[0]:self.in_indices[1]], self.bias)


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
