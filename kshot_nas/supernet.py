"""K-shot supernet: K supernets of identical structure stored as K copies of every searchable tensor.

``forward(x, arch, lam, widths=None)`` runs path ``arch`` (one op index per searchable layer) with the weights
``sum_k lam_k theta^(k)``.  ``lam`` is one simplex code ``[K]`` fed to every layer (the card's default), or
``[L + 1, K]`` per-layer codes (row 0 for the fixed stem / first block / head, row i + 1 for layer i).
The classifier Linear is a single shared copy.  ``export_subnet`` builds the path's stand-alone network with the
combined (detached) weights, for BN recalibration and scoring.
"""
import torch
import torch.nn as nn

from model import StandaloneNet
from ops import Identity, InvertedResidual, KShotBatchNorm2d, KShotConv2d, make_act
from search_space import OPS, STAGES, WIDTH_CHOICES, SearchSpace


class ChoiceLayer(nn.Module):
    """One searchable layer: every candidate op of the space (identity included; legality is the space's)."""

    def __init__(self, inp, oup, stride, space, weight_num, bn_weight_num, act):
        super().__init__()
        self.ops = nn.ModuleList(
            Identity() if spec is None else
            InvertedResidual(inp, oup, stride, spec[1], spec[0], spec[2], weight_num, bn_weight_num, act)
            for spec in space.op_specs)

    def forward(self, x, op, lam, hidden_ratio=1.0):
        return self.ops[op](x, lam, hidden_ratio)


class KShotSuperNet(nn.Module):
    def __init__(self, K=3, stages=STAGES, ops=OPS, num_classes=1000, channel_search=False,
                 width_choices=WIDTH_CHOICES, bn_K=None, stem_channels=32, first_channels=16, last_channels=1280,
                 stem_stride=2, act='hswish', stem_act='relu', dropout=0.0, classifier_std=0.001):
        super().__init__()
        bn_K = K if bn_K is None else bn_K
        if K < 1 or bn_K not in (1, K):
            raise ValueError(f'K must be >= 1 and bn_K 1 or K, got K={K}, bn_K={bn_K}')
        self.K, self.bn_K, self.channel_search = K, bn_K, channel_search
        self.space = SearchSpace(stages, ops, stem_channels, first_channels, last_channels, stem_stride,
                                 num_classes=num_classes, width_choices=width_choices)
        self.net_kwargs = dict(num_classes=num_classes, stages=self.space.stages, ops=self.space.ops,
                               stem_channels=stem_channels, first_channels=first_channels,
                               last_channels=last_channels, stem_stride=stem_stride, act=act, stem_act=stem_act)
        # fixed parts are K-shot too (the authors' code gives them a K count)
        self.conv_stem = KShotConv2d(3, stem_channels, 3, stem_stride, weight_num=K)
        self.bn1 = KShotBatchNorm2d(stem_channels, bn_K)
        self.act1 = make_act(stem_act)
        self.first = InvertedResidual(stem_channels, first_channels, 1, 1, 3, False, K, bn_K, act)
        self.blocks = nn.ModuleList(ChoiceLayer(inp, oup, stride, self.space, K, bn_K, act)
                                    for inp, oup, stride, _ in self.space.layers)
        self.conv_head = KShotConv2d(self.space.layers[-1][1], last_channels, 1, weight_num=K)
        self.bn2 = KShotBatchNorm2d(last_channels, bn_K)
        self.act2 = make_act(stem_act)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Linear(last_channels, num_classes)
        nn.init.normal_(self.classifier.weight, 0, classifier_std)
        nn.init.zeros_(self.classifier.bias)

    @property
    def num_layers(self):
        return self.space.num_layers

    def _codes(self, lam):
        """(code of the fixed parts, list of per-layer codes)."""
        if lam.dim() == 1:
            return lam, [lam] * self.num_layers
        if lam.shape[0] != self.num_layers + 1:
            raise ValueError(f'per-layer codes need {self.num_layers + 1} rows, got {lam.shape[0]}')
        return lam[0], list(lam[1:])

    def forward(self, x, arch, lam, widths=None):
        if len(arch) != self.num_layers:
            raise ValueError(f'a path needs {self.num_layers} ops, got {len(arch)}')
        fixed, codes = self._codes(lam)
        x = self.act1(self.bn1(self.conv_stem(x, fixed), fixed))
        x = self.first(x, fixed)
        for i, (layer, op) in enumerate(zip(self.blocks, arch)):
            x = layer(x, op, codes[i], 1.0 if widths is None else widths[i])
        x = self.act2(self.bn2(self.conv_head(x, fixed), fixed)).mean((2, 3))
        return self.classifier(self.dropout(x))

    def _source(self, name, arch):
        """Supernet module path of a stand-alone module path."""
        parts = name.split('.')
        if parts[0] == 'blocks':
            return '.'.join(['blocks', parts[1], 'ops', str(arch[int(parts[1])])] + parts[2:])
        return name

    @torch.no_grad()
    def export_subnet(self, arch, lam, widths=None):
        """The path as a ``StandaloneNet`` holding the combined weights (left-sliced to the path's widths) and the
        supernet's running statistics; dropout as the supernet's."""
        self.space.check(arch, widths)
        p = next(self.parameters())
        lam = lam.detach().to(p.device)
        fixed, codes = self._codes(lam)
        net = StandaloneNet(arch, widths, dropout=0.0, **self.net_kwargs).to(p.device)
        net.dropout = self.dropout
        sup_modules = dict(self.named_modules())
        for name, m in net.named_modules():
            if not isinstance(m, (nn.Conv2d, nn.BatchNorm2d, nn.Linear)):
                continue
            src = sup_modules[self._source(name, arch)]
            code = codes[int(name.split('.')[1])] if name.startswith('blocks.') else fixed
            if isinstance(m, nn.Linear):
                m.load_state_dict(src.state_dict())
                continue
            if isinstance(m, nn.Conv2d):
                w, b = src.combined(code)
                m.weight.copy_(w[tuple(slice(0, n) for n in m.weight.shape)])
                if m.bias is not None:
                    m.bias.copy_(b[:m.bias.shape[0]])
            else:
                c = m.num_features
                w, b = src.combined(code, c)
                m.weight.copy_(w)
                m.bias.copy_(b)
                m.running_mean.copy_(src.running_mean[:c])
                m.running_var.copy_(src.running_var[:c])
        return net

    def copy_parameters(self):
        """Parameters stored in K copies (everything but the shared classifier)."""
        return [p for n, p in self.named_parameters() if not n.startswith('classifier.')]
