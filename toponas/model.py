"""The evaluation networks of DARTS (``quark0/darts/cnn/model.py``), unchanged apart from reading cells whose
nodes have any number of inputs (TopoNAS with a free in-degree): one op per genotype edge, affine BN,
drop-path on every non-identity op during training, optional auxiliary head after cell 2*layers//3.
"""
import torch
import torch.nn as nn

from genotypes import cell_edges
from operations import OPS, FactorizedReduce, Identity, ReLUConvBN
from utils import drop_path


class Cell(nn.Module):

    def __init__(self, genotype, C_prev_prev, C_prev, C, reduction, reduction_prev):
        super().__init__()
        pairs, concat = (genotype.reduce, genotype.reduce_concat) if reduction else \
            (genotype.normal, genotype.normal_concat)
        edges = cell_edges(pairs)
        used = {src for _, src, _ in edges} | set(concat)
        # a free in-degree cell may leave an input unused: it then gets no preprocessing (and no weights)
        self.preprocess0 = None
        if 0 in used:
            self.preprocess0 = FactorizedReduce(C_prev_prev, C) if reduction_prev else \
                ReLUConvBN(C_prev_prev, C, 1, 1, 0)
        self.preprocess1 = ReLUConvBN(C_prev, C, 1, 1, 0) if 1 in used else None
        self._compile(C, edges, concat, reduction)

    def _compile(self, C, edges, concat, reduction):
        self._steps = max(node for _, _, node in edges) - 1
        self._concat = list(concat)
        self.multiplier = len(concat)
        self.reduction = reduction
        self._ops = nn.ModuleList()
        self._indices, self._nodes = [], []
        for name, index, node in edges:
            stride = 2 if reduction and index < 2 else 1
            self._ops.append(OPS[name](C, stride, True))
            self._indices.append(index)
            self._nodes.append(node)

    def forward(self, s0, s1, drop_prob):
        states = [self.preprocess0(s0) if self.preprocess0 is not None else None,
                  self.preprocess1(s1) if self.preprocess1 is not None else None]
        for node in range(2, 2 + self._steps):
            s = 0
            for op, index, n in zip(self._ops, self._indices, self._nodes):
                if n != node:
                    continue
                h = op(states[index])
                if self.training and drop_prob > 0. and not isinstance(op, Identity):
                    h = drop_path(h, drop_prob)
                s = s + h
            states.append(s)
        return torch.cat([states[i] for i in self._concat], dim=1)


class AuxiliaryHeadCIFAR(nn.Module):

    def __init__(self, C, num_classes):
        """assuming input size 8x8"""
        super().__init__()
        self.features = nn.Sequential(
            nn.ReLU(inplace=True),
            nn.AvgPool2d(5, stride=3, padding=0, count_include_pad=False),  # image size = 2 x 2
            nn.Conv2d(C, 128, 1, bias=False),
            nn.BatchNorm2d(128),
            nn.ReLU(inplace=True),
            nn.Conv2d(128, 768, 2, bias=False),
            nn.BatchNorm2d(768),
            nn.ReLU(inplace=True))
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


class AuxiliaryHeadImageNet(nn.Module):

    def __init__(self, C, num_classes):
        """assuming input size 14x14; no BN after the 768-channel conv, as in the official code"""
        super().__init__()
        self.features = nn.Sequential(
            nn.ReLU(inplace=True),
            nn.AvgPool2d(5, stride=2, padding=0, count_include_pad=False),
            nn.Conv2d(C, 128, 1, bias=False),
            nn.BatchNorm2d(128),
            nn.ReLU(inplace=True),
            nn.Conv2d(128, 768, 2, bias=False),
            nn.ReLU(inplace=True))
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


def _multiplier(genotype):
    return len(genotype.normal_concat), len(genotype.reduce_concat)


def _cell_stack(genotype, C_prev_prev, C_prev, C_curr, layers, reduction_prev):
    """The evaluation network's cells (reductions at layers // 3 and 2 * layers // 3, channels doubled there), the
    output channels of the last cell and of cell 2 * layers // 3 (the auxiliary head's input)."""
    cells, C_aux = nn.ModuleList(), None
    for i in range(layers):
        reduction = i in (layers // 3, 2 * layers // 3)
        if reduction:
            C_curr *= 2
        cell = Cell(genotype, C_prev_prev, C_prev, C_curr, reduction, reduction_prev)
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
    """Stem conv3x3(3 -> 3C) + BN, ``layers`` cells (reductions at layers//3, 2*layers//3), GAP, linear.
    ``forward`` returns ``(logits, logits_aux)``; reads ``self.drop_path_prob``."""

    def __init__(self, C, num_classes, layers, auxiliary, genotype):
        super().__init__()
        self._layers = layers
        self._auxiliary = auxiliary
        self.drop_path_prob = 0.0
        stem_multiplier = 3
        C_curr = stem_multiplier * C
        self.stem = nn.Sequential(nn.Conv2d(3, C_curr, 3, padding=1, bias=False), nn.BatchNorm2d(C_curr))
        self.cells, C_prev, C_to_auxiliary = _cell_stack(genotype, C_curr, C_curr, C, layers, False)
        if auxiliary:
            self.auxiliary_head = AuxiliaryHeadCIFAR(C_to_auxiliary, num_classes)
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_prev, num_classes)

    def forward(self, input):
        s0 = s1 = self.stem(input)
        return _cells_forward(self, s0, s1)


class NetworkImageNet(nn.Module):
    """Stems: conv3x3 s2 (3 -> C/2), BN, ReLU, conv3x3 s2 (-> C), BN; ReLU, conv3x3 s2, BN (stem1); cells with
    the second one already a reduction; AvgPool 7; linear."""

    def __init__(self, C, num_classes, layers, auxiliary, genotype):
        super().__init__()
        self._layers = layers
        self._auxiliary = auxiliary
        self.drop_path_prob = 0.0
        self.stem0 = nn.Sequential(
            nn.Conv2d(3, C // 2, kernel_size=3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(C // 2),
            nn.ReLU(inplace=True),
            nn.Conv2d(C // 2, C, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(C))
        self.stem1 = nn.Sequential(
            nn.ReLU(inplace=True),
            nn.Conv2d(C, C, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(C))
        self.cells, C_prev, C_to_auxiliary = _cell_stack(genotype, C, C, C, layers, True)
        if auxiliary:
            self.auxiliary_head = AuxiliaryHeadImageNet(C_to_auxiliary, num_classes)
        self.global_pooling = nn.AdaptiveAvgPool2d(1)  # AvgPool2d(7) at 224x224; adaptive for any size
        self.classifier = nn.Linear(C_prev, num_classes)

    def forward(self, input):
        s0 = self.stem0(input)
        s1 = self.stem1(s0)
        return _cells_forward(self, s0, s1)
