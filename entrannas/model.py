"""The evaluation networks (quark0/darts ``model.py``), extended to EnTranNAS-DST genotypes.

``Cell`` accepts a DARTS ``Genotype`` (two (op, src) pairs per node) or a ``FlexGenotype`` ((op, src, dst)
triples, any in-degree, several ops per edge). One op instance per genotype entry, in genotype order, so a DARTS
genotype gives the state_dict keys of quark0/darts. ``share_features=True`` builds one instance per (src, op)
and reuses its output for every destination (EnTranNAS feature sharing carried into evaluation; off by default).
"""
import torch
import torch.nn as nn

from genotypes import check_genotype, to_flex
from operations import OPS, FactorizedReduce, Identity, ReLUConvBN
from utils import drop_path


class Cell(nn.Module):
    def __init__(self, genotype, C_prev_prev, C_prev, C, reduction, reduction_prev, share_features=False):
        super().__init__()
        check_genotype(genotype)
        if reduction_prev:
            self.preprocess0 = FactorizedReduce(C_prev_prev, C)
        else:
            self.preprocess0 = ReLUConvBN(C_prev_prev, C, 1, 1, 0)
        self.preprocess1 = ReLUConvBN(C_prev, C, 1, 1, 0)
        flex = to_flex(genotype)
        triples, concat = (flex.reduce, flex.reduce_concat) if reduction else (flex.normal, flex.normal_concat)
        self.reduction = reduction
        self.share_features = share_features
        self._steps = max(d for _, _, d in triples) - 1
        self._concat = list(concat)
        self.multiplier = len(self._concat)
        self._ops = nn.ModuleList()
        self._edges = []  # (index into _ops, src, dst)
        seen = {}
        for name, src, dst in triples:
            key = (name, src)
            if share_features and key in seen:
                self._edges.append((seen[key], src, dst))
                continue
            stride = 2 if reduction and src < 2 else 1
            self._ops.append(OPS[name](C, stride, True))
            seen[key] = len(self._ops) - 1
            self._edges.append((seen[key], src, dst))

    def forward(self, s0, s1, drop_prob):
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        cache = {}
        for j in range(2, 2 + self._steps):
            acc = None
            for n, src, dst in self._edges:
                if dst != j:
                    continue
                op = self._ops[n]
                h = cache.get(n) if self.share_features else None
                if h is None:
                    h = op(states[src])
                    if self.share_features:
                        cache[n] = h
                if self.training and drop_prob > 0 and not isinstance(op, Identity):
                    h = drop_path(h, drop_prob)
                acc = h if acc is None else acc + h
            states.append(acc)
        return torch.cat([states[i] for i in self._concat], dim=1)


class AuxiliaryHeadCIFAR(nn.Module):
    """Auxiliary classifier on the 8x8 output of cell 2*layers//3."""

    def __init__(self, C, num_classes):
        super().__init__()
        self.features = nn.Sequential(
            nn.ReLU(inplace=False),  # quark0/darts: inplace=True (same values; it would overwrite the cell output)
            nn.AvgPool2d(5, stride=3, padding=0, count_include_pad=False),  # 8x8 -> 2x2
            nn.Conv2d(C, 128, 1, bias=False), nn.BatchNorm2d(128), nn.ReLU(inplace=True),
            nn.Conv2d(128, 768, 2, bias=False), nn.BatchNorm2d(768), nn.ReLU(inplace=True))
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


class AuxiliaryHeadImageNet(nn.Module):
    """Auxiliary classifier on the 14x14 maps (no BN after the 768 conv, as in quark0/darts)."""

    def __init__(self, C, num_classes):
        super().__init__()
        self.features = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.AvgPool2d(5, stride=2, padding=0, count_include_pad=False),
            nn.Conv2d(C, 128, 1, bias=False), nn.BatchNorm2d(128), nn.ReLU(inplace=True),
            nn.Conv2d(128, 768, 2, bias=False), nn.ReLU(inplace=True))
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


def _cell_stack(genotype, C_prev_prev, C_prev, C_curr, layers, reduction_prev, share_features=False):
    """The evaluation network's cells (reductions at layers // 3 and 2 * layers // 3, channels doubled there), the
    output channels of the last cell and of cell 2 * layers // 3 (the auxiliary head's input)."""
    cells, C_aux = nn.ModuleList(), None
    for i in range(layers):
        reduction = i in (layers // 3, 2 * layers // 3)
        if reduction:
            C_curr *= 2
        cell = Cell(genotype, C_prev_prev, C_prev, C_curr, reduction, reduction_prev, share_features)
        reduction_prev = reduction
        cells.append(cell)
        C_prev_prev, C_prev = C_prev, cell.multiplier * C_curr
        if i == 2 * layers // 3:
            C_aux = C_prev
    return cells, C_prev, C_aux


def _cells_forward(net, s0, s1):
    """The cells from the stem outputs (s0, s1), the auxiliary head after cell 2L/3 in training, then pooling and
    the classifier: ``(logits, logits_aux)`` of NetworkCIFAR and NetworkImageNet."""
    logits_aux = None
    for i, cell in enumerate(net.cells):
        s0, s1 = s1, cell(s0, s1, net.drop_path_prob)
        if i == 2 * net._layers // 3 and net._auxiliary and net.training:
            logits_aux = net.auxiliary_head(s1)
    return net.classifier(net.global_pooling(s1).flatten(1)), logits_aux


class NetworkCIFAR(nn.Module):
    def __init__(self, C, num_classes, layers, auxiliary, genotype, share_features=False):
        super().__init__()
        self._layers = layers
        self._auxiliary = auxiliary
        self.drop_path_prob = 0.0
        stem_multiplier = 3
        C_curr = stem_multiplier * C
        self.stem = nn.Sequential(nn.Conv2d(3, C_curr, 3, padding=1, bias=False), nn.BatchNorm2d(C_curr))
        self.cells, C_prev, C_aux = _cell_stack(genotype, C_curr, C_curr, C, layers, False, share_features)
        if auxiliary:
            self.auxiliary_head = AuxiliaryHeadCIFAR(C_aux, num_classes)
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_prev, num_classes)

    def forward(self, input):
        s0 = s1 = self.stem(input)
        return _cells_forward(self, s0, s1)


class NetworkImageNet(nn.Module):
    def __init__(self, C, num_classes, layers, auxiliary, genotype, share_features=False):
        super().__init__()
        self._layers = layers
        self._auxiliary = auxiliary
        self.drop_path_prob = 0.0
        self.stem0 = nn.Sequential(
            nn.Conv2d(3, C // 2, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(C // 2), nn.ReLU(inplace=True),
            nn.Conv2d(C // 2, C, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(C))
        self.stem1 = nn.Sequential(
            nn.ReLU(inplace=False), nn.Conv2d(C, C, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(C))
        self.cells, C_prev, C_aux = _cell_stack(genotype, C, C, C, layers, True, share_features)
        if auxiliary:
            self.auxiliary_head = AuxiliaryHeadImageNet(C_aux, num_classes)
        self.global_pooling = nn.AdaptiveAvgPool2d(1)  # 7x7 at 224 input (DARTS: AvgPool2d(7))
        self.classifier = nn.Linear(C_prev, num_classes)

    def forward(self, input):
        s0 = self.stem0(input)
        s1 = self.stem1(s0)
        return _cells_forward(self, s0, s1)
