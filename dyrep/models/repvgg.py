"""RepVGG-A2 / B2g4 / B3 in timm's ``byobnet`` form (the ``timm_repvgg_*`` models of the official DyRep runs).

Block: ``conv_kxk`` (3x3 conv -> BN) + ``conv_1x1`` (1x1 conv -> BN) [+ ``identity`` BN when shapes allow], then
ReLU. Stem: one block 3 -> 64, stride 2; four stages, each starting with stride 2; ``head.fc``. B2g4 uses 4
groups in every second block of a stage (timm's group-size rule). Init as timm: conv N(0, 2/fan_out) with
fan_out = k^2 C_out / g, block BNs gamma ~ N(0.1, 0.1), beta ~ N(0, 0.1), linear N(0, 0.01).

``reparameterize`` is RepVGG's own structural re-parameterization (3x3 + 1x1 + identity -> one 3x3 conv);
DyRep's DBBs grown inside ``conv_kxk.conv`` are fused by ``convert.deploy`` first (or on the fly here).
"""
import math

import torch
import torch.nn as nn

from dbb_transforms import transI_fusebn, transII_addbranch, transVI_multiscale, transIX_bn_to_1x1


class ConvBn(nn.Module):
    def __init__(self, c_in, c_out, kernel_size, stride=1, groups=1):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel_size, stride, kernel_size // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x):
        return self.bn(self.conv(x))


class RepVggBlock(nn.Module):
    def __init__(self, c_in, c_out, stride=1, groups=1):
        super().__init__()
        self.identity = nn.BatchNorm2d(c_out) if c_in == c_out and stride == 1 else None
        self.conv_kxk = ConvBn(c_in, c_out, 3, stride, groups)
        self.conv_1x1 = ConvBn(c_in, c_out, 1, stride, groups)
        self.act = nn.ReLU(inplace=True)
        self.c_in, self.c_out, self.stride, self.groups = c_in, c_out, stride, groups

    def forward(self, x):
        if hasattr(self, 'reparam_conv'):
            return self.act(self.reparam_conv(x))
        out = self.conv_1x1(x) + self.conv_kxk(x)
        if self.identity is not None:
            out = out + self.identity(x)
        return self.act(out)

    @torch.no_grad()
    def reparameterize(self):
        """Fuse the branches into ``reparam_conv`` (3x3 with bias); exact in eval mode."""
        if hasattr(self, 'reparam_conv'):
            return
        conv = self.conv_kxk.conv
        w, b = conv.get_actual_kernel() if hasattr(conv, 'get_actual_kernel') else (conv.weight, conv.bias)
        ws, bs = [], []
        w, b = transI_fusebn(w, self.conv_kxk.bn, b)
        ws.append(w)
        bs.append(b)
        w, b = transI_fusebn(self.conv_1x1.conv.weight, self.conv_1x1.bn, self.conv_1x1.conv.bias)
        ws.append(transVI_multiscale(w, 3))
        bs.append(b)
        if self.identity is not None:
            w, b = transIX_bn_to_1x1(self.identity, self.c_in, self.groups)
            ws.append(w)
            bs.append(b)
        w, b = transII_addbranch(ws, bs)
        fused = nn.Conv2d(self.c_in, self.c_out, 3, self.stride, 1, groups=self.groups, bias=True).to(w)
        fused.weight.copy_(w)
        fused.bias.copy_(b)
        self.reparam_conv = fused.train(self.training)
        del self.conv_kxk, self.conv_1x1, self.identity
        self.identity = None


class ClassifierHead(nn.Module):
    def __init__(self, c_in, num_classes):
        super().__init__()
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c_in, num_classes)

    def forward(self, x):
        return self.fc(self.global_pool(x).flatten(1))


class RepVGG(nn.Module):
    def __init__(self, depths, widths, groups=0, stem_chs=64, num_classes=1000):
        super().__init__()
        self.stem = RepVggBlock(3, stem_chs, stride=2)
        stages, c_in = [], stem_chs
        for depth, c_out in zip(depths, widths):
            blocks = []
            for i in range(depth):
                # timm: group size c_out // groups for every second block of a stage (idx 1, 3, ...)
                g = c_in // (c_out // groups) if groups and (i + 1) % 2 == 0 else 1
                blocks.append(RepVggBlock(c_in, c_out, stride=2 if i == 0 else 1, groups=g))
                c_in = c_out
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.final_conv = nn.Identity()
        self.head = ClassifierHead(c_in, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
                nn.init.normal_(m.weight, 0, math.sqrt(2.0 / fan_out))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.normal_(m.weight, 0.1, 0.1)
                nn.init.normal_(m.bias, 0, 0.1)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        return self.head(self.final_conv(self.stages(self.stem(x))))

    def reparameterize(self):
        """RepVGG's deploy form: every block becomes one 3x3 conv with bias."""
        for m in self.modules():
            if isinstance(m, RepVggBlock):
                m.reparameterize()
        return self


def repvgg_a2(num_classes=1000):
    return RepVGG((2, 4, 14, 1), (96, 192, 384, 1408), num_classes=num_classes)


def repvgg_b2g4(num_classes=1000):
    return RepVGG((4, 6, 16, 1), (160, 320, 640, 2560), groups=4, num_classes=num_classes)


def repvgg_b3(num_classes=1000):
    return RepVGG((4, 6, 16, 1), (192, 384, 768, 2560), num_classes=num_classes)
