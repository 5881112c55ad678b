"""The networks of Channel-Bench-Macro (BCNetV2, arXiv 2203.13714), MobileNet and ResNet spaces.

An architecture is a 7-digit string a_0..a_6 in {1,2,3,4}; slot i gets c_i = round(a_i * F_i / 4) channels,
i.e. 25/50/75/100 % of its full width F_i. Input 3x32x32, 10 classes, every conv bias-free and followed by
BN. Module names follow the benchmark's ``model.py`` so its checkpoints load with ``strict=True``.

MobileNet space, F = [128, 768, 768, 768, 256, 1536, 1024]:
    stem conv3x3/2 (3->c0) | MB(c0,c1,c0) + x | MB(c0,c2,c0) + x | MB(c0,c3,c4, stride 2) |
    MB(c4,c5,c4) + x | conv1x1 c4->c6, pool | Linear(c6, 10)
ResNet space, F = [256, 256, 256, 512, 512, 512, 512]:
    stem conv3x3/2 (3->c0) | relu(x + B(c0,c1,c0)) | relu(x + B(c0,c2,c0)) | relu(B(c0,c3,c4, stride 2)) |
    relu(x + B(c4,c5,c4)) | relu(x + B(c4,c6,c4)) | pool | Linear(c4, 10)

``width_mult`` (default 1, the benchmark) scales every F_i; the embedded CPU default uses a narrow copy.
"""
import torch.nn as nn

__all__ = ['MOBILENET_WIDTHS', 'RESNET_WIDTHS', 'SPACES', 'InvertedResidual_easy', 'MobileNet', 'ResNet',
           'parse_arch', 'arch_channels', 'build_cbm', 'cbm_counts']

MOBILENET_WIDTHS = (128, 768, 768, 768, 256, 1536, 1024)
RESNET_WIDTHS = (256, 256, 256, 512, 512, 512, 512)
SPACES = {'mobilenet': MOBILENET_WIDTHS, 'resnet': RESNET_WIDTHS}


def parse_arch(arch):
    """'1234123' or [1, 2, 3, 4, 1, 2, 3] -> list of 7 ints in 1..4 (ValueError otherwise)."""
    digits = [int(a) for a in (str(arch) if isinstance(arch, (str, int)) else arch)]
    if len(digits) != 7 or not all(1 <= a <= 4 for a in digits):
        raise ValueError(f'a Channel-Bench-Macro arch is 7 digits in 1..4, got {arch!r}')
    return digits


def arch_channels(arch, space, width_mult=1.0):
    """Channels c_0..c_6 of ``arch`` in ``space`` ('mobilenet' | 'resnet')."""
    if space not in SPACES:
        raise ValueError(f"unknown Channel-Bench-Macro space {space!r} (choose from {sorted(SPACES)})")
    return [round(a * f * width_mult / 4) for a, f in zip(parse_arch(arch), SPACES[space])]


def _conv_bn(cin, cout, k, stride=1, groups=1, relu=True):
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return layers


class InvertedResidual_easy(nn.Module):
    """MB block with explicit widths: pw 1x1 cin->hidden, dw kxk (stride), pw-linear hidden->cout.

    ``t`` is kept for the official signature; the hidden width is given in ``channels``. The input is added
    when ``stride == 1`` and ``cin == cout``.
    """

    def __init__(self, channels, stride=1, t=6, k=3):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f'stride must be 1 or 2, got {stride}')
        cin, hidden, cout = channels
        self.stride, self.t, self.k = stride, t, k
        self.conv = nn.Sequential(*_conv_bn(cin, hidden, 1), *_conv_bn(hidden, hidden, k, stride, groups=hidden),
                                  *_conv_bn(hidden, cout, 1, relu=False))
        self.use_shortcut = cin == cout and stride == 1

    def forward(self, x):
        if self.use_shortcut:
            return self.conv(x) + x
        return self.conv(x)


class MobileNet(nn.Module):
    """Channel-Bench-Macro MobileNet space network for ``arch``."""

    def __init__(self, arch, num_classes=10, width_mult=1.0):
        super().__init__()
        c = arch_channels(arch, 'mobilenet', width_mult)
        self.stem = nn.Sequential(*_conv_bn(3, c[0], 3, stride=2))
        self.features = nn.Sequential(
            InvertedResidual_easy([c[0], c[1], c[0]]),
            InvertedResidual_easy([c[0], c[2], c[0]]),
            InvertedResidual_easy([c[0], c[3], c[4]], stride=2),
            InvertedResidual_easy([c[4], c[5], c[4]]))
        self.out = nn.Sequential(*_conv_bn(c[4], c[6], 1), nn.AdaptiveAvgPool2d(1))
        self.classifier = nn.Linear(c[6], num_classes)

    def forward(self, x):
        x = self.out(self.features(self.stem(x)))
        return self.classifier(x.view(x.size(0), -1))


class ResNet(nn.Module):
    """Channel-Bench-Macro ResNet space network for ``arch`` (block 3 has no shortcut at all)."""

    def __init__(self, arch, num_classes=10, width_mult=1.0):
        super().__init__()
        c = arch_channels(arch, 'resnet', width_mult)

        def block(cin, mid, cout, stride=1):
            return nn.Sequential(*_conv_bn(cin, mid, 3, stride), *_conv_bn(mid, cout, 3, relu=False))

        self.stem = nn.Sequential(*_conv_bn(3, c[0], 3, stride=2))
        self.block1 = block(c[0], c[1], c[0])
        self.block2 = block(c[0], c[2], c[0])
        self.block3 = block(c[0], c[3], c[4], stride=2)
        self.block4 = block(c[4], c[5], c[4])
        self.block5 = block(c[4], c[6], c[4])
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.relu = nn.ReLU(inplace=True)
        self.classifier = nn.Linear(c[4], num_classes)

    def forward(self, x):
        x = self.stem(x)
        x = self.relu(x + self.block1(x))
        x = self.relu(x + self.block2(x))
        x = self.relu(self.block3(x))
        x = self.relu(x + self.block4(x))
        x = self.relu(x + self.block5(x))
        x = self.pool(x)
        return self.classifier(x.view(x.size(0), -1))


def build_cbm(space, arch='4444444', num_classes=10, width_mult=1.0):
    """``MobileNet`` or ``ResNet`` of ``space`` for ``arch``."""
    cls = {'mobilenet': MobileNet, 'resnet': ResNet}.get(space)
    if cls is None:
        raise ValueError(f"unknown Channel-Bench-Macro space {space!r} (choose from {sorted(SPACES)})")
    return cls(arch, num_classes=num_classes, width_mult=width_mult)


def cbm_counts(arch, space, num_classes=10, width_mult=1.0):
    """Closed-form (params, MACs) of a benchmark network at 3x32x32, by the benchmark's counting rules.

    params: conv weights + BN gamma/beta + FC weight and bias; MACs: Cin*Cout*k^2*Hout*Wout/groups of every
    conv plus in*out of the FC. Independent of the nn.Module code above (tests check the two agree).
    """
    c = arch_channels(arch, space, width_mult)
    n = num_classes
    if space == 'mobilenet':
        def mb(cin, h, cout, hw_in, hw_out):  # (params, macs) of one MB block
            p = cin * h + 2 * h + 9 * h + 2 * h + h * cout + 2 * cout
            f = cin * h * hw_in + 9 * h * hw_out + h * cout * hw_out
            return p, f
        blocks = [mb(c[0], c[1], c[0], 256, 256), mb(c[0], c[2], c[0], 256, 256),
                  mb(c[0], c[3], c[4], 256, 64), mb(c[4], c[5], c[4], 64, 64)]
        params = 27 * c[0] + 2 * c[0] + sum(p for p, _ in blocks) + c[4] * c[6] + 2 * c[6] + c[6] * n + n
        macs = 27 * c[0] * 256 + sum(f for _, f in blocks) + c[4] * c[6] * 64 + c[6] * n
        return params, macs

    def basic(cin, mid, cout, hw):  # (params, macs) of one basic block with output hw
        return 9 * cin * mid + 2 * mid + 9 * mid * cout + 2 * cout, (9 * cin * mid + 9 * mid * cout) * hw
    blocks = [basic(c[0], c[1], c[0], 256), basic(c[0], c[2], c[0], 256), basic(c[0], c[3], c[4], 64),
              basic(c[4], c[5], c[4], 64), basic(c[4], c[6], c[4], 64)]
    params = 27 * c[0] + 2 * c[0] + sum(p for p, _ in blocks) + c[4] * n + n
    macs = 27 * c[0] * 256 + sum(f for _, f in blocks) + c[4] * n
    return params, macs
