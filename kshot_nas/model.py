"""The stand-alone network of one path (single weights, ordinary layers): for retraining and for scoring a path
with the combined weights of the K-shot supernet (``KShotSuperNet.export_subnet``).

State-dict keys mirror the supernet's with the op index dropped (``blocks.3.conv_dw.weight`` here is
``blocks.3.ops.<op>.conv_dw.weight`` there), so a path's combined weights load by name.
"""
import torch
import torch.nn as nn

from ops import HSigmoid, make_act, scaled_channels
from search_space import OPS, STAGES, SearchSpace


class SqueezeExcite(nn.Module):
    def __init__(self, channels, reduction=4):
        super().__init__()
        r = max(1, channels // reduction)
        self.conv_reduce = nn.Conv2d(channels, r, 1, bias=True)
        self.act = nn.ReLU(inplace=True)
        self.conv_expand = nn.Conv2d(r, channels, 1, bias=True)
        self.gate = HSigmoid()

    def forward(self, x):
        s = self.conv_expand(self.act(self.conv_reduce(x.mean((2, 3), keepdim=True))))
        return x * self.gate(s)


class MBConv(nn.Module):
    """The stand-alone inverted residual (same layout and keys as ``ops.InvertedResidual``)."""

    def __init__(self, inp, oup, stride, t, k, use_se, act='hswish', hidden_ratio=1.0):
        super().__init__()
        mid = scaled_channels(inp * t, hidden_ratio) if t != 1 else inp
        self.t, self.use_res = t, stride == 1 and inp == oup
        if t != 1:
            self.conv_pw = nn.Conv2d(inp, mid, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(mid)
            self.act1 = make_act(act)
        self.conv_dw = nn.Conv2d(mid, mid, k, stride, k // 2, groups=mid, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.act2 = make_act(act)
        self.se = SqueezeExcite(mid) if use_se else None
        self.conv_pwl = nn.Conv2d(mid, oup, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(oup)

    def forward(self, x):
        out = x
        if self.t != 1:
            out = self.act1(self.bn1(self.conv_pw(out)))
        out = self.act2(self.bn2(self.conv_dw(out)))
        if self.se is not None:
            out = self.se(out)
        out = self.bn3(self.conv_pwl(out))
        return x + out if self.use_res else out


def init_weights(model, classifier_std=0.001):
    """The group's MobileNetV2 init: Kaiming-normal (fan-out) convs, BN 1/0, classifier N(0, std), biases 0."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, classifier_std)
            nn.init.zeros_(m.bias)


class StandaloneNet(nn.Module):
    """One path of the space as an ordinary network: ``StandaloneNet(arch, widths=None, num_classes, dropout)``.

    The structural arguments after ``dropout`` describe the space (defaults: the ImageNet space of the card).
    """

    def __init__(self, arch, widths=None, num_classes=1000, dropout=0.2, stages=STAGES, ops=OPS, stem_channels=32,
                 first_channels=16, last_channels=1280, stem_stride=2, act='hswish', stem_act='relu'):
        super().__init__()
        space = SearchSpace(stages, ops, stem_channels, first_channels, last_channels, stem_stride,
                            num_classes=num_classes)
        space.check(arch, widths)
        self.arch, self.widths = list(arch), None if widths is None else list(widths)
        self.conv_stem = nn.Conv2d(3, stem_channels, 3, stem_stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem_channels)
        self.act1 = make_act(stem_act)
        self.first = MBConv(stem_channels, first_channels, 1, 1, 3, False, act)
        blocks, inp = [], first_channels
        for i, (o, (_, oup, stride, _)) in enumerate(zip(arch, space.layers)):
            spec = space.op_specs[o]
            if spec is None:
                blocks.append(nn.Identity())
                continue
            k, t, se = spec
            blocks.append(MBConv(inp, oup, stride, t, k, se, act, 1.0 if widths is None else widths[i]))
            inp = oup
        self.blocks = nn.Sequential(*blocks)
        self.conv_head = nn.Conv2d(inp, last_channels, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(last_channels)
        self.act2 = make_act(stem_act)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Linear(last_channels, num_classes)
        init_weights(self)

    def forward_features(self, x):
        x = self.first(self.act1(self.bn1(self.conv_stem(x))))
        x = self.blocks(x)
        return self.act2(self.bn2(self.conv_head(x))).mean((2, 3))

    def forward(self, x):
        return self.classifier(self.dropout(self.forward_features(x)))


@torch.no_grad()
def count_macs(model, input_size):
    """MACs of every Conv2d and Linear in one forward (hooks; an independent check of the closed form)."""
    total = [0]

    def conv_hook(m, inp, out):
        total[0] += out.numel() // out.shape[0] * m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]

    def fc_hook(m, inp, out):
        total[0] += m.in_features * m.out_features

    hooks = [m.register_forward_hook(conv_hook if isinstance(m, nn.Conv2d) else fc_hook)
             for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    model.eval()
    model(torch.zeros(1, *input_size))
    model.train(was_training)
    for h in hooks:
        h.remove()
    return total[0]


def count_parameters(model):
    return sum(p.numel() for p in model.parameters())
