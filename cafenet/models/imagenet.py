"""ImageNet backbones built from per-conv channel lists (the format of BCNet's released widths).

* MobileNetV2, 52 entries: stem, then per block [expand,] dw, project (the t=1 block has no expand), then the
  last 1x1 conv. A dw conv has the width of its input; a residual block's project has the width of its input.
* ResNet-50, 53 entries: stem, then per bottleneck conv1, conv2, conv3, plus the downsample conv of the first
  block of each stage (which must equal conv3 of every block of that stage, the residual width).

Module names are torchvision's, so a full-width network takes torchvision's ``state_dict`` with ``strict=True``.
"""
import torch.nn as nn

__all__ = ['MBV2_SETTINGS', 'RESNET50_LAYERS', 'mobilenetv2_channels', 'mobilenetv2_from_channels',
           'resnet50_channels', 'resnet50_from_channels']

# (expand ratio t, output channels c, blocks n, stride of the first block s): MobileNetV2 1.0x
MBV2_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                 (6, 320, 1, 1))
RESNET50_LAYERS = (3, 4, 6, 3)


def _make_divisible(v, divisor=8):
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


def _mbv2_layout(settings):
    """[(t, n, s)] per stage from ``settings`` rows (t, c, n, s)."""
    return [(t, n, s) for t, _, n, s in settings]


def mobilenetv2_channels(width_mult=1.0, stem=None, settings=MBV2_SETTINGS, last=None):
    """The 52-entry channel list of a MobileNetV2 (torchvision's rounding for ``width_mult``).

    ``stem``, ``settings`` rows (t, c, n, s) and ``last`` may be given explicitly (e.g. the widened supernets
    of the official BCNetV2 configs); explicit ``stem``/``last`` are used as is, without ``width_mult``.
    """
    stem = _make_divisible(32 * width_mult) if stem is None else int(stem)
    last = _make_divisible(1280 * max(1.0, width_mult)) if last is None else int(last)
    ch, cin = [stem], stem
    for t, c, n, _ in settings:
        cout = int(c) if width_mult == 1.0 else _make_divisible(c * width_mult)
        for _ in range(n):
            hidden = int(round(cin * t))
            ch += ([cin, cout] if t == 1 else [hidden, hidden, cout])
            cin = cout
    return ch + [last]


class _ConvBNAct(nn.Sequential):
    def __init__(self, cin, cout, k=3, stride=1, groups=1):
        super().__init__(nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU6(inplace=True))


class _InvertedResidual(nn.Module):
    def __init__(self, cin, hidden, cout, stride, expand, residual):
        super().__init__()
        layers = [_ConvBNAct(cin, hidden, 1)] if expand else []
        layers += [_ConvBNAct(hidden, hidden, 3, stride, groups=hidden), nn.Conv2d(hidden, cout, 1, bias=False),
                   nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)
        self.use_res_connect = residual

    def forward(self, x):
        if self.use_res_connect:
            return x + self.conv(x)
        return self.conv(x)


class MobileNetV2(nn.Module):
    def __init__(self, features, last_channels, num_classes=1000, dropout=0.2):
        super().__init__()
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(last_channels, num_classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode='fan_out')
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        x = self.features(x)
        x = nn.functional.adaptive_avg_pool2d(x, 1)
        return self.classifier(x.flatten(1))


def mobilenetv2_from_channels(ch, num_classes=1000, settings=MBV2_SETTINGS, dropout=0.2):
    """MobileNetV2 with the per-conv widths ``ch`` (52 entries for the standard layout)."""
    layout = _mbv2_layout(settings)
    expected = 2 + sum(n * (2 if t == 1 else 3) for t, n, _ in layout)
    ch = [int(c) for c in ch]
    if len(ch) != expected:
        raise ValueError(f'MobileNetV2 channel list needs {expected} entries, got {len(ch)}')
    if min(ch) < 1:
        raise ValueError('every channel width must be >= 1')
    features, i, cin = [_ConvBNAct(3, ch[0], 3, 2)], 1, ch[0]
    for stage, (t, n, s) in enumerate(layout):
        for b in range(n):
            if t == 1:
                hidden, cout, i = cin, ch[i + 1], i + 2
                if ch[i - 2] != cin:
                    raise ValueError(f'entry {i - 2}: a dw conv keeps its input width {cin}, got {ch[i - 2]}')
            else:
                hidden, cout, i = ch[i], ch[i + 2], i + 3
                if ch[i - 2] != hidden:
                    raise ValueError(f'entry {i - 2}: a dw conv keeps the expand width {hidden}, got {ch[i - 2]}')
            residual = b > 0
            if residual and cout != cin:
                raise ValueError(f'entry {i - 1}: block {b} of stage {stage} adds its input ({cin} channels), '
                                 f'so its project conv must have {cin} channels, got {cout}')
            features.append(_InvertedResidual(cin, hidden, cout, s if b == 0 else 1, t != 1, residual))
            cin = cout
    features.append(_ConvBNAct(cin, ch[i], 1))
    return MobileNetV2(features, ch[i], num_classes, dropout)


def resnet50_channels(width_mult=1.0):
    """The 53-entry channel list of ResNet-50 (every width scaled by ``width_mult``)."""
    ch = [int(64 * width_mult)]
    for stage, n in enumerate(RESNET50_LAYERS):
        mid, out = int(64 * 2 ** stage * width_mult), int(256 * 2 ** stage * width_mult)
        for b in range(n):
            ch += [mid, mid, out] + ([out] if b == 0 else [])
    return ch


class Bottleneck(nn.Module):
    def __init__(self, cin, c1, c2, c3, stride, downsample):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, c1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c1)
        self.conv2 = nn.Conv2d(c1, c2, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c2)
        self.conv3 = nn.Conv2d(c2, c3, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(c3)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = (nn.Sequential(nn.Conv2d(cin, c3, 1, stride, bias=False), nn.BatchNorm2d(c3))
                           if downsample else None)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class ResNet50(nn.Module):
    def __init__(self, ch, num_classes=1000):
        super().__init__()
        self.conv1 = nn.Conv2d(3, ch[0], 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(ch[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        i, cin = 1, ch[0]
        for stage, n in enumerate(RESNET50_LAYERS):
            blocks = []
            for b in range(n):
                c1, c2, c3 = ch[i:i + 3]
                if b == 0:
                    if ch[i + 3] != c3:
                        raise ValueError(f'entry {i + 3}: the downsample conv is added to conv3, so it needs '
                                         f'{c3} channels, got {ch[i + 3]}')
                    i += 4
                else:
                    if c3 != cin:
                        raise ValueError(f'entry {i + 2}: block {b} of stage {stage} adds its input ({cin} '
                                         f'channels), so its conv3 needs {cin} channels, got {c3}')
                    i += 3
                blocks.append(Bottleneck(cin, c1, c2, c3, 2 if (b == 0 and stage > 0) else 1, b == 0))
                cin = c3
            setattr(self, f'layer{stage + 1}', nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.avgpool(x).flatten(1))


def resnet50_from_channels(ch, num_classes=1000):
    """ResNet-50 (torchvision layout, stride on the 3x3 conv) with the per-conv widths ``ch`` (53 entries)."""
    ch = [int(c) for c in ch]
    expected = 1 + sum(3 * n + 1 for n in RESNET50_LAYERS)
    if len(ch) != expected:
        raise ValueError(f'ResNet-50 channel list needs {expected} entries, got {len(ch)}')
    if min(ch) < 1:
        raise ValueError('every channel width must be >= 1')
    return ResNet50(ch, num_classes)
