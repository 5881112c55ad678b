"""The CPU-checkable numbers of the spec card, ours next to the reference (``python tables.py``).

Parameter counts exclude the auxiliary head (the DARTS convention); FLOPs are counted by
torch.utils.flop_counter.FlopCounterMode (2 per multiply-add), on meta tensors (no arithmetic).
"""
import argparse

import torch
import torch.nn as nn

from genotypes import DARTS_V1, DARTS_V2
from model import NetworkCIFAR, NetworkImageNet
from model_search import Network
from utils import count_parameters


def flops(net, size):
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        net.eval()(torch.randn(1, 3, size, size, device='meta'))
    return fc.get_total_flops()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--no-flops', action='store_true', help='skip the FLOPs rows')
    args = ap.parse_args()
    crit = nn.CrossEntropyLoss()
    rows = [
        ('super-net, plain DARTS (C=16, 8 cells, 14x8 op sets)',
         lambda: count_parameters(Network(16, 10, 8, crit, mode='darts', feature_sharing=False)), 1_930_618),
        ('super-net, EnTranNAS feature sharing (5x8 op sets per cell)',
         lambda: count_parameters(Network(16, 10, 8, crit, mode='entrannas')), 749_050),
        ('super-net, EnTranNAS-DST (feature sharing, 7 ops, no none)',
         lambda: count_parameters(Network(16, 10, 8, crit, mode='dst')), None),
        ('super-net, ImageNet stem (PC-DARTS layout), EnTranNAS-DST',
         lambda: count_parameters(Network(16, 1000, 8, crit, mode='dst', stem='imagenet')), None),
        ('DARTS_V1, CIFAR-10 (C=36, 20 cells)',
         lambda: count_parameters(NetworkCIFAR(36, 10, 20, True, DARTS_V1)), 3_169_414),
        ('DARTS_V2, CIFAR-10 (C=36, 20 cells)',
         lambda: count_parameters(NetworkCIFAR(36, 10, 20, True, DARTS_V2)), 3_349_342),
        ('auxiliary head, CIFAR-10 (excluded above)',
         lambda: sum(p.numel() for n, p in NetworkCIFAR(36, 10, 20, True, DARTS_V2).named_parameters()
                     if 'auxiliary' in n), 476_426),
        ('DARTS_V1, ImageNet mobile (C=48, 14 cells)',
         lambda: count_parameters(NetworkImageNet(48, 1000, 14, True, DARTS_V1)), None),
        ('DARTS_V2, ImageNet mobile (C=48, 14 cells)',
         lambda: count_parameters(NetworkImageNet(48, 1000, 14, True, DARTS_V2)), 4_718_752),
    ]
    if not args.no_flops:
        def meta(fn):
            with torch.device('meta'):
                return fn()
        rows += [
            ('FLOPs DARTS_V2 CIFAR-10 at 32x32 (FlopCounterMode)',
             lambda: flops(meta(lambda: NetworkCIFAR(36, 10, 20, False, DARTS_V2)), 32), 1_056_718_080),
            ('FLOPs DARTS_V2 ImageNet at 224x224 (FlopCounterMode)',
             lambda: flops(meta(lambda: NetworkImageNet(48, 1000, 14, False, DARTS_V2)), 224), 1_059_823_104),
        ]
    print(f'{"item":62s} {"ours":>15s} {"card":>15s}  match')
    bad = 0
    for name, fn, ref in rows:
        ours = fn()
        ok = '' if ref is None else ('yes' if ours == ref else 'NO')
        bad += ok == 'NO'
        print(f'{name:62s} {ours:15,d} {"-" if ref is None else f"{ref:,d}":>15s}  {ok}')
    print('all card numbers reproduced' if not bad else f'{bad} rows differ from the card')


if __name__ == '__main__':
    main()
