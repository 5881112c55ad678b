"""NAS-Bench-Macro search space (Su et al., CVPR 2021): the stand-alone network and its supernet.

Eight searchable layers in three stages of (2, 3, 3) layers after a stride-1 stem; the first layer of a stage
has stride 2 and doubles the channels. Every layer picks one of ``candidate_OP`` (the JSON digit is the
index): ``id`` (a 1x1 stride-2 projection + BN at a stage's first layer, a true identity elsewhere),
``ir_3x3_t3`` (MB3_K3) and ``ir_5x5_t6`` (MB6_K5). ``Network(arch)`` reproduces the benchmark's ``params``
and ``flops`` for all 6561 keys; module names follow the official ``train/model.py`` so state dicts match.
"""
from collections import OrderedDict

import torch
import torch.nn as nn

candidate_OP = ['id', 'ir_3x3_t3', 'ir_5x5_t6']
OPS = OrderedDict()
OPS['id'] = lambda inp, oup, stride: Identity(inp, oup, stride)
OPS['ir_3x3_t3'] = lambda inp, oup, stride: InvertedResidual(inp, oup, stride, t=3, k=3)
OPS['ir_5x5_t6'] = lambda inp, oup, stride: InvertedResidual(inp, oup, stride, t=6, k=5)

STAGES = (2, 3, 3)
NUM_LAYERS = sum(STAGES)


class Identity(nn.Module):
    """``id``: nothing when shape is kept, else conv 1x1 (stride) + BN, no ReLU."""

    def __init__(self, inp, oup, stride):
        super().__init__()
        if stride != 1 or inp != oup:
            self.downsample = nn.Sequential(
                nn.Conv2d(inp, oup, 1, stride=stride, bias=False),
                nn.BatchNorm2d(oup),
            )
        else:
            self.downsample = None

    def forward(self, x):
        return x if self.downsample is None else self.downsample(x)


class InvertedResidual(nn.Module):
    """MobileNetV2 block: pw (t>1) -> dw k x k (stride) -> pw-linear; residual iff stride 1 and inp == oup."""

    def __init__(self, inp, oup, stride, t, k=3, activation=nn.ReLU):
        super().__init__()
        assert stride in (1, 2)
        self.stride, self.t, self.k = stride, t, k
        hidden = round(inp * t)
        layers = []
        if t != 1:
            layers += [nn.Conv2d(inp, hidden, 1, bias=False), nn.BatchNorm2d(hidden), activation(inplace=True)]
        layers += [
            nn.Conv2d(hidden, hidden, k, stride, padding=k // 2, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden), activation(inplace=True),
            nn.Conv2d(hidden, oup, 1, bias=False), nn.BatchNorm2d(oup),
        ]
        self.conv = nn.Sequential(*layers)
        self.use_shortcut = stride == 1 and inp == oup

    def forward(self, x):
        out = self.conv(x)
        return out + x if self.use_shortcut else out


def layer_shapes(stages=STAGES, init_channels=32):
    """(inp, oup, stride) of every searchable layer, in order."""
    shapes, c = [], init_channels
    for n in stages:
        for i in range(n):
            if i == 0:
                shapes.append((c, 2 * c, 2))
                c *= 2
            else:
                shapes.append((c, c, 1))
    return shapes


def _stem(c):
    return nn.Sequential(nn.Conv2d(3, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True))


def _head(c):
    return nn.Sequential(nn.Conv2d(c, 1280, 1, bias=False), nn.BatchNorm2d(1280), nn.ReLU(inplace=True),
                         nn.AdaptiveAvgPool2d(1))


def parse_arch(arch, num_layers=NUM_LAYERS):
    """'22212220' or [2, 2, 2, ...] -> list[int]; raises ValueError on a malformed code."""
    if isinstance(arch, str):
        if not arch.isdigit():
            raise ValueError(f'architecture {arch!r} must be a string of digits 0-2')
        arch = [int(ch) for ch in arch]
    arch = [int(a) for a in arch]
    if len(arch) != num_layers or any(a < 0 or a >= len(candidate_OP) for a in arch):
        raise ValueError(f'architecture {arch} must have {num_layers} entries in 0..{len(candidate_OP) - 1}')
    return arch


class Network(nn.Module):
    """A fixed NAS-Bench-Macro architecture (the network trained stand-alone to build the benchmark)."""

    def __init__(self, arch, num_classes=10, stages=STAGES, init_channels=32):
        super().__init__()
        arch = parse_arch(arch, sum(stages))
        self.arch = arch
        self.stem = _stem(init_channels)
        self.features = nn.Sequential(*[OPS[candidate_OP[a]](inp, oup, s)
                                        for a, (inp, oup, s) in zip(arch, layer_shapes(stages, init_channels))])
        channels = init_channels * 2 ** len(stages)
        self.out = _head(channels)
        self.classifier = nn.Linear(1280, num_classes)

    def forward(self, x):
        x = self.out(self.features(self.stem(x)))
        return self.classifier(torch.flatten(x, 1))


class ChoiceBlock(nn.Module):
    """One searchable layer of the supernet: all candidates, one of them active (``self.choice``)."""

    def __init__(self, inp, oup, stride):
        super().__init__()
        self.ops = nn.ModuleList([OPS[name](inp, oup, stride) for name in candidate_OP])
        self.choice = 0

    def forward(self, x):
        return self.ops[self.choice](x)


class MacroSupernet(nn.Module):
    """Single-path supernet over the NAS-Bench-Macro space; ``set_subnet(arch)`` selects one path.

    A fixed path is exactly ``Network(arch)`` (same parameters and FLOPs). The official NASModel init is
    TF-style (``tf_init=True``): conv normal(0, sqrt(2 / (k^2 Cout))), BN (1, 0), linear uniform(+-1/sqrt(out)).
    """

    def __init__(self, num_classes=10, stages=STAGES, init_channels=32, tf_init=True):
        super().__init__()
        self.stem = _stem(init_channels)
        self.features = nn.Sequential(*[ChoiceBlock(*shape) for shape in layer_shapes(stages, init_channels)])
        self.out = _head(init_channels * 2 ** len(stages))
        self.classifier = nn.Linear(1280, num_classes)
        self.choices = [len(candidate_OP)] * len(self.features)
        if tf_init:
            tf_init_(self)

    @property
    def choice_modules(self):
        return list(self.features)

    def set_subnet(self, arch):
        arch = parse_arch(arch, len(self.features))
        for m, a in zip(self.features, arch):
            m.choice = a

    def get_subnet(self):
        return [m.choice for m in self.features]

    def forward(self, x):
        x = self.out(self.features(self.stem(x)))
        return self.classifier(torch.flatten(x, 1))


def tf_init_(model):
    """Weight init of the official NASModel (TF style)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            nn.init.normal_(m.weight, 0.0, (2.0 / n) ** 0.5)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            bound = 1.0 / m.weight.size(0) ** 0.5
            nn.init.uniform_(m.weight, -bound, bound)
            nn.init.zeros_(m.bias)
    return model


def real_arch(arch, stages=STAGES):
    """Canonical form: inside each stage, the non-first identities move to the stage's end."""
    arch = parse_arch(arch, sum(stages))
    out, i = [], 0
    for n in stages:
        first, rest = arch[i], arch[i + 1:i + n]
        out += [first] + [a for a in rest if a != 0] + [0] * rest.count(0)
        i += n
    return ''.join(map(str, out))


def analytic_params_macs(arch, num_classes=10, stages=STAGES, init_channels=32, resolution=32):
    """Closed-form (params, MACs) of ``Network(arch)``: conv + linear MACs, no bias term in the FC MACs."""
    arch = parse_arch(arch, sum(stages))
    c0 = init_channels
    params = 9 * 3 * c0 + 2 * c0
    macs = 9 * 3 * c0 * resolution ** 2
    s = resolution
    for a, (inp, oup, stride) in zip(arch, layer_shapes(stages, init_channels)):
        s_out = s // stride
        if a == 0:
            if stride != 1 or inp != oup:
                params += inp * oup + 2 * oup
                macs += inp * oup * s_out ** 2
        else:
            t, k = (3, 3) if a == 1 else (6, 5)
            h = round(inp * t)
            params += inp * h + 2 * h + h * k * k + 2 * h + h * oup + 2 * oup
            macs += inp * h * s ** 2 + h * k * k * s_out ** 2 + h * oup * s_out ** 2
        s = s_out
    c = c0 * 2 ** len(stages)
    params += c * 1280 + 2 * 1280 + 1280 * num_classes + num_classes
    macs += c * 1280 * s ** 2 + 1280 * num_classes
    return params, macs
