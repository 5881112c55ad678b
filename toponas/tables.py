"""The CPU-checkable numbers of the card next to ours: super-net and evaluation-network parameter counts, FLOPs
(torch FlopCounterMode, 2 FLOPs per multiply-add), and the size of the topology variables.
``python tables.py`` (a few seconds; ``--no-flops`` skips the two FLOP counts)."""
import argparse

import torch
import torch.nn as nn

from genotypes import DARTS_V1, DARTS_V2
from model import NetworkCIFAR, NetworkImageNet
from model_search import Network
from topology import num_topology_variables
from utils import count_parameters


def flops(model, size):
    from torch.utils.flop_counter import FlopCounterMode
    model.eval()
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        model(torch.randn(1, 3, size, size))
    return fc.get_total_flops()


def row(what, paper, ours):
    p = f'{paper:,}' if isinstance(paper, int) else paper
    o = f'{ours:,}' if isinstance(ours, int) else ours
    mark = '' if not isinstance(paper, int) else ('  ok' if paper == ours else '  DIFFERS')
    print(f'| {what:<68} | {p:>15} | {o:>15} |{mark}')


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument('--no-flops', action='store_true')
    args = ap.parse_args()
    print(f'| {"check":<68} | {"card / paper":>15} | {"ours":>15} |')
    print(f'|{"-" * 70}|{"-" * 17}|{"-" * 17}|')
    ce = nn.CrossEntropyLoss()
    for kw, label in ((dict(topo_param='none'), 'DARTS'), (dict(), 'TopoNAS edge form'),
                      (dict(topo_param='combination'), 'TopoNAS combination form'),
                      (dict(topo_k=0), 'TopoNAS free in-degree')):
        net = Network(16, 10, 8, ce, **kw)
        row(f'search super-net weights, C=16, 8 cells ({label})', 1930618, sum(p.numel() for p in net.weights()))
    for param, k, paper in (('edge', 2, 14), ('combination', 2, 20), ('combination', 0, '-')):
        row(f'topology variables per cell type ({param}, k={k})', paper, num_topology_variables(4, param, k))
    pc = Network(16, 10, 8, ce, base='pcdarts')
    row('search super-net weights, PC-DARTS base (K=4)', '-', sum(p.numel() for p in pc.weights()))
    v2 = NetworkCIFAR(36, 10, 20, True, DARTS_V2)
    row('DARTS_V2 eval net, C=36, 20 cells (aux excluded)', 3349342, count_parameters(v2))
    row('  + auxiliary head', 476426, sum(p.numel() for p in v2.parameters()) - count_parameters(v2))
    row('DARTS_V1 eval net, C=36, 20 cells', 3169414, count_parameters(NetworkCIFAR(36, 10, 20, False, DARTS_V1)))
    imnet = NetworkImageNet(48, 1000, 14, True, DARTS_V2)
    row('DARTS_V2 ImageNet net, C=48, 14 cells (aux excluded)', 4718752, count_parameters(imnet))
    if not args.no_flops:
        row('DARTS_V2 CIFAR FLOPs at 32x32', 1056718080, flops(NetworkCIFAR(36, 10, 20, False, DARTS_V2), 32))
        row('DARTS_V2 ImageNet FLOPs at 224x224', 1059823104,
            flops(NetworkImageNet(48, 1000, 14, False, DARTS_V2), 224))
    print()
    print('GPU-only rows (paper, CIFAR-10 test error / params; per-row tables not recoverable, see README):')
    print('  DARTS 2nd order 2.76 +- 0.09% / 3.3M;  TopoNAS compact ~2.60% / ~2.0M;  TopoNAS matched ~2.41% / ~3.3M')


if __name__ == '__main__':
    main()
