"""The MobileNetV2-style single-path space of GreedyNAS / MCT-NAS / K-shot NAS, with params and FLOPs of any path.

ImageNet layout: stem Conv3x3(32, s2)-BN-act -> fixed MBConv t=1 32->16 -> 21 searchable layers in the stages
``STAGES`` (c_out, layers, first stride) -> Conv1x1 1280-BN-act -> pool -> Linear.  Each searchable layer picks
one of 13 candidates: MBConv k in {3,5,7} x t in {3,6} x SE {off,on}, plus identity (not at a stage's first
layer).  Op index = 6*se + 2*kernel_idx + exp_idx, 12 = identity.

Cost convention (the card's): MACs of conv and linear layers only (SE 1x1 convs at 1x1 spatial; BN,
activations, residual adds and pooling not counted; classifier once); params = every learnable parameter of
the stand-alone network (BN gamma/beta included).
"""
import random

from ops import scaled_channels

OPS = ['ir_3x3_nse_t3', 'ir_3x3_nse_t6', 'ir_5x5_nse_t3', 'ir_5x5_nse_t6', 'ir_7x7_nse_t3', 'ir_7x7_nse_t6',
       'ir_3x3_se_t3', 'ir_3x3_se_t6', 'ir_5x5_se_t3', 'ir_5x5_se_t6', 'ir_7x7_se_t3', 'ir_7x7_se_t6', 'id']
STAGES = [(32, 4, 2), (40, 4, 2), (80, 4, 2), (96, 4, 1), (192, 4, 2), (320, 1, 1)]
WIDTH_CHOICES = (0.2, 0.4, 0.6, 0.8, 1.0)


def parse_op(name):
    """'ir_5x5_se_t6' -> (kernel 5, expansion 6, se True); 'id' -> None."""
    if name == 'id':
        return None
    try:
        kind, ks, se, t = name.split('_')
        k = int(ks.split('x')[0])
        assert kind == 'ir' and ks == f'{k}x{k}' and se in ('se', 'nse') and t[0] == 't'
        return k, int(t[1:]), se == 'se'
    except (ValueError, AssertionError, IndexError):
        raise ValueError(f"unknown op {name!r}: expected 'ir_<k>x<k>_<se|nse>_t<t>' or 'id'") from None


def conv_out(size, stride):
    """Spatial size after a conv with padding k//2 (odd k)."""
    return (size - 1) // stride + 1


def mbconv_cost(inp, oup, stride, t, k, se, size, hidden_ratio=1.0):
    """(params, MACs, output size) of one stand-alone MBConv on a ``size`` x ``size`` input."""
    hid = inp * t
    mid = scaled_channels(hid, hidden_ratio) if t != 1 else hid
    out = conv_out(size, stride)
    params = macs = 0
    if t != 1:
        params += inp * mid + 2 * mid
        macs += inp * mid * size * size
    params += k * k * mid + 2 * mid
    macs += k * k * mid * out * out
    if se:
        r = max(1, mid // 4)
        params += 2 * mid * r + r + mid
        macs += 2 * mid * r
    params += mid * oup + 2 * oup
    macs += mid * oup * out * out
    return params, macs, out


class SearchSpace:
    """Layer geometry, legal ops, sampling and the closed-form cost of any path (and widths)."""

    def __init__(self, stages=STAGES, ops=OPS, stem_channels=32, first_channels=16, last_channels=1280,
                 stem_stride=2, image_size=224, num_classes=1000, width_choices=WIDTH_CHOICES):
        self.stages = [tuple(int(v) for v in s) for s in stages]
        self.ops = list(ops)
        self.op_specs = [parse_op(o) for o in self.ops]
        self.id_index = self.ops.index('id') if 'id' in self.ops else None
        self.stem_channels, self.first_channels, self.last_channels = stem_channels, first_channels, last_channels
        self.stem_stride, self.image_size, self.num_classes = stem_stride, image_size, num_classes
        self.width_choices = tuple(width_choices)
        self.layers = []  # (inp, oup, stride, stage-first)
        inp = first_channels
        for c, n, s in self.stages:
            for j in range(n):
                self.layers.append((inp, c, s if j == 0 else 1, j == 0))
                inp = c
        self._legal = [[o for o, spec in enumerate(self.op_specs)
                        if spec is not None or (stride == 1 and i == c)]
                       for i, c, stride, _ in self.layers]

    @property
    def num_layers(self):
        return len(self.layers)

    @property
    def num_ops(self):
        return len(self.ops)

    def legal_ops(self, layer_idx):
        """Candidate indices allowed at a layer (identity only where input and output shapes agree)."""
        return list(self._legal[layer_idx])

    def check(self, arch, widths=None):
        if len(arch) != self.num_layers:
            raise ValueError(f'a path needs {self.num_layers} ops, got {len(arch)}')
        for i, o in enumerate(arch):
            if o not in self._legal[i]:
                raise ValueError(f'op {o} is not legal at layer {i} (legal: {self._legal[i]})')
        if widths is not None:
            if len(widths) != self.num_layers or any(w not in self.width_choices for w in widths):
                raise ValueError(f'widths must be {self.num_layers} values from {self.width_choices}')

    def sample_arch(self, rng=random):
        """Uniform over the legal ops of every layer (SPOS uniform sampling)."""
        return [rng.choice(ops) for ops in self._legal]

    def sample_widths(self, rng=random):
        return [rng.choice(self.width_choices) for _ in self.layers]

    def canonical(self, arch, widths=None):
        """(arch, widths) with the width of identity layers set to 1.0 (it has no channels to slice)."""
        if widths is None:
            return list(arch), None
        return list(arch), [1.0 if o == self.id_index else w for o, w in zip(arch, widths)]

    def cost(self, arch, widths=None):
        """(params, MACs) of the stand-alone network of a path."""
        self.check(arch, widths)
        size = conv_out(self.image_size, self.stem_stride)
        params = 27 * self.stem_channels + 2 * self.stem_channels
        macs = 27 * self.stem_channels * size * size
        p, m, size = mbconv_cost(self.stem_channels, self.first_channels, 1, 1, 3, False, size)
        params, macs = params + p, macs + m
        inp = self.first_channels
        for i, (o, (_, oup, stride, _)) in enumerate(zip(arch, self.layers)):
            spec = self.op_specs[o]
            if spec is None:
                continue
            k, t, se = spec
            p, m, size = mbconv_cost(inp, oup, stride, t, k, se, size, 1.0 if widths is None else widths[i])
            params, macs, inp = params + p, macs + m, oup
        params += inp * self.last_channels + 2 * self.last_channels
        macs += inp * self.last_channels * size * size
        params += self.last_channels * self.num_classes + self.num_classes
        macs += self.last_channels * self.num_classes
        return params, macs

    def count_flops(self, arch, widths=None):
        return self.cost(arch, widths)[1]

    def count_params(self, arch, widths=None):
        return self.cost(arch, widths)[0]

    def arch_str(self, arch, widths=None):
        s = '-'.join(str(o) for o in arch)
        if widths is not None:
            s += ' w' + '-'.join(f'{w:g}' for w in widths)
        return s


IMAGENET = SearchSpace()


def legal_ops(layer_idx):
    return IMAGENET.legal_ops(layer_idx)


def sample_arch(rng=random):
    return IMAGENET.sample_arch(rng)


def count_flops(arch, widths=None):
    """MACs at 224x224 of a path of the ImageNet space."""
    return IMAGENET.count_flops(arch, widths)


def count_params(arch, widths=None):
    return IMAGENET.count_params(arch, widths)
