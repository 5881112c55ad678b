"""ImageNet search space of MCT-NAS (the GreedyNAS MobileNetV2 space) and the searched MCT-NAS-A/B/C.

Supernet: stem conv 3x3 s2 (3->32) + BN + ReLU, a fixed t=1 k3 block 32->16, 21 searchable layers with 7
choices each (index 0..5 = (k, t) in ``CHOICES``, 6 = ``id``), head conv 1x1 320->1280 + BN + ReLU, global
pool, FC. Searched models are retrained with h-swish and squeeze-excite (SE after the depthwise conv, reduce
width max(1, int(0.25 * expanded)), h-swish inside, h-sigmoid gate, convs with bias).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from .nas_bench_macro import tf_init_

# searchable layers: (inp, oup, stride) for the 21 layers of the GreedyNAS space
_GROUPS = [  # (out channels, number of layers, stride of the first)
    (32, 4, 2), (40, 4, 2), (80, 4, 2), (96, 4, 1), (192, 4, 2), (320, 1, 1)]
CHOICES = [(3, 3), (5, 3), (7, 3), (3, 6), (5, 6), (7, 6), 'id']


def layer_shapes():
    shapes, c = [], 16
    for oup, n, s in _GROUPS:
        for i in range(n):
            shapes.append((c, oup, s if i == 0 else 1))
            c = oup
    return shapes


NUM_LAYERS = len(layer_shapes())  # 21

MCTNAS_ARCHS = {
    'MCT-NAS-A': [(3, 6), (3, 3), (3, 3), (3, 3), (3, 3), (5, 3), (5, 3), (3, 3), (3, 6), (5, 3), (5, 3),
                  (3, 6), (3, 6), (7, 6), (3, 6), (5, 6), (7, 6), (7, 6), (5, 6), (5, 6), (7, 6)],
    'MCT-NAS-B': [(7, 3), 'id', 'id', (3, 3), (5, 3), (5, 3), (3, 6), (3, 3), (3, 3), 'id', (5, 6),
                  (5, 6), (5, 6), (3, 3), (3, 3), (3, 3), (5, 6), (5, 3), (7, 6), (3, 3), (7, 6)],
    'MCT-NAS-C': [(3, 3), 'id', (3, 3), (3, 3), (5, 3), (5, 3), (3, 3), (3, 3), (5, 3), (7, 3), 'id',
                  (5, 3), (7, 3), (7, 3), 'id', (3, 3), (5, 3), (5, 3), (5, 3), (7, 3), (7, 6)],
}
# paper (Table on ImageNet): FLOPs (M), params (M), top-1, top-5; C's accuracies are not retrievable here
PAPER = {'MCT-NAS-A': (442, 8.4, 78.0, 93.9), 'MCT-NAS-B': (327, 6.3, 76.9, 93.4),
         'MCT-NAS-C': (280, None, None, None)}


class HSwish(nn.Module):
    def forward(self, x):
        return x * F.relu6(x + 3.0) / 6.0


class HSigmoid(nn.Module):
    def forward(self, x):
        return F.relu6(x + 3.0) / 6.0


def _act(name):
    return {'relu': lambda: nn.ReLU(inplace=True), 'hswish': HSwish}[name]()


class SqueezeExcite(nn.Module):
    def __init__(self, channels, reduce_channels):
        super().__init__()
        self.conv_reduce = nn.Conv2d(channels, reduce_channels, 1, bias=True)
        self.act = HSwish()
        self.conv_expand = nn.Conv2d(reduce_channels, channels, 1, bias=True)
        self.gate = HSigmoid()

    def forward(self, x):
        s = F.adaptive_avg_pool2d(x, 1)
        return x * self.gate(self.conv_expand(self.act(self.conv_reduce(s))))


class MBBlock(nn.Module):
    """Inverted residual with an optional SE after the depthwise conv (SE width from the expanded width)."""

    def __init__(self, inp, oup, stride, k, t, act='relu', se=False):
        super().__init__()
        hidden = round(inp * t)
        layers = []
        if t != 1:
            layers += [nn.Conv2d(inp, hidden, 1, bias=False), nn.BatchNorm2d(hidden), _act(act)]
        layers += [nn.Conv2d(hidden, hidden, k, stride, k // 2, groups=hidden, bias=False),
                   nn.BatchNorm2d(hidden), _act(act)]
        if se:
            layers.append(SqueezeExcite(hidden, max(1, int(0.25 * hidden))))
        layers += [nn.Conv2d(hidden, oup, 1, bias=False), nn.BatchNorm2d(oup)]
        self.conv = nn.Sequential(*layers)
        self.use_shortcut = stride == 1 and inp == oup

    def forward(self, x):
        out = self.conv(x)
        return out + x if self.use_shortcut else out


class IdBlock(nn.Module):
    """``id``: identity, or conv 1x1 + BN where the layer changes channels or stride."""

    def __init__(self, inp, oup, stride):
        super().__init__()
        self.downsample = None
        if stride != 1 or inp != oup:
            self.downsample = nn.Sequential(nn.Conv2d(inp, oup, 1, stride, bias=False), nn.BatchNorm2d(oup))

    def forward(self, x):
        return x if self.downsample is None else self.downsample(x)


def _make_op(choice, inp, oup, stride, act='relu', se=False):
    if choice == 'id':
        return IdBlock(inp, oup, stride)
    k, t = choice
    return MBBlock(inp, oup, stride, k, t, act=act, se=se)


class MobileNetSpace(nn.Module):
    """Stem + fixed first block + 21 layers + head. ``layers`` holds modules (fixed nets or choice blocks)."""

    def __init__(self, layers, num_classes=1000, drop_rate=0.0, first_act='relu'):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 32, 3, 2, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU(inplace=True))
        self.first = MBBlock(32, 16, 1, 3, 1, act=first_act)
        self.features = nn.Sequential(*layers)
        self.out = nn.Sequential(nn.Conv2d(320, 1280, 1, bias=False), nn.BatchNorm2d(1280), nn.ReLU(inplace=True),
                                 nn.AdaptiveAvgPool2d(1))
        self.drop_rate = drop_rate
        self.classifier = nn.Linear(1280, num_classes)

    def forward(self, x):
        x = self.out(self.features(self.first(self.stem(x))))
        x = torch.flatten(x, 1)
        if self.drop_rate > 0:
            x = F.dropout(x, self.drop_rate, self.training)
        return self.classifier(x)


class ChoiceLayer(nn.Module):
    def __init__(self, inp, oup, stride):
        super().__init__()
        self.ops = nn.ModuleList([_make_op(c, inp, oup, stride) for c in CHOICES])
        self.choice = 0

    def forward(self, x):
        return self.ops[self.choice](x)


class MBSupernet(MobileNetSpace):
    """The ImageNet single-path supernet (ReLU, no SE); ``set_subnet(list of 21 indices into CHOICES)``."""

    def __init__(self, num_classes=1000):
        super().__init__([ChoiceLayer(*s) for s in layer_shapes()], num_classes=num_classes)
        self.choices = [len(CHOICES)] * NUM_LAYERS
        tf_init_(self)

    @property
    def choice_modules(self):
        return list(self.features)

    def set_subnet(self, arch):
        arch = [int(a) for a in arch]
        if len(arch) != NUM_LAYERS or any(a < 0 or a >= len(CHOICES) for a in arch):
            raise ValueError(f'ImageNet subnet must have {NUM_LAYERS} entries in 0..{len(CHOICES) - 1}: {arch}')
        for m, a in zip(self.features, arch):
            m.choice = a

    def get_subnet(self):
        return [m.choice for m in self.features]


def build_supernet_mbv2(num_classes=1000):
    return MBSupernet(num_classes)


def build_from_layers(layers, num_classes=1000, drop_rate=0.0, se=True, act='hswish'):
    """A retrainable network from 21 entries, each (kernel, expansion) or 'id' (searched models: SE + h-swish)."""
    layers = [tuple(x) if x != 'id' else 'id' for x in layers]
    if len(layers) != NUM_LAYERS or any(x != 'id' and x not in CHOICES for x in layers):
        raise ValueError(f'expected {NUM_LAYERS} layers, each one of {CHOICES}; got {layers}')
    mods = [_make_op(c, inp, oup, s, act=act, se=se) for c, (inp, oup, s) in zip(layers, layer_shapes())]
    return MobileNetSpace(mods, num_classes=num_classes, drop_rate=drop_rate,
                          first_act=act if se else 'relu')


def build_mctnas(name, num_classes=1000, drop_rate=0.2):
    if name not in MCTNAS_ARCHS:
        raise ValueError(f'unknown model {name!r}; choose one of {sorted(MCTNAS_ARCHS)}')
    return build_from_layers(MCTNAS_ARCHS[name], num_classes=num_classes, drop_rate=drop_rate)


def subnet_to_layers(arch):
    """Supernet indices -> layer list for ``build_from_layers``."""
    return [CHOICES[int(a)] for a in arch]
