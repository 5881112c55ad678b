"""Print params and official-counter FLOPs of the released ViTAS nets and the DeiT baselines next to
the paper's (spec card's) numbers, plus the CPU-checkable search-space facts.

    python tables.py            # add --standard for torch.utils.flop_counter figures (slower)
"""
import argparse
import sys

import torch

import model
from flops import count_flops, count_flops_standard, expected_flops
from supernet import ViTASSuperNet

# name: (params, FLOPs (official counter), top-1, top-5) as in the card / official README
PAPER = {
    'ViTAS-A': (3_679_478, 858_652_480, 71.1, 89.8),
    'ViTAS-B': (4_400_248, 990_624_768, 72.4, 90.6),
    'ViTAS-C': (6_048_414, 1_303_042_496, 74.7, 92.0),
    'ViTAS-E': (12_550_598, 2_706_797_632, 77.4, 93.8),
    'ViTAS-F': (22_540_277, 4_930_994_656, 80.6, 95.1),
    'DeiT-Ti': (5_717_416, 1_284_003_840, 72.2, None),
    'DeiT-S': (22_050_664, 4_648_906_752, 79.8, None),
}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--standard', action='store_true',
                    help='also run torch.utils.flop_counter (2 x MACs, 197 tokens, head once)')
    args = ap.parse_args(argv)
    ok = True
    head = f"{'model':8s} {'params (ours)':>14s} {'params (paper)':>14s} {'FLOPs (ours)':>14s} " \
           f"{'FLOPs (paper)':>14s}  {'top-1/top-5 (paper, ImageNet, GPU)':s}"
    if args.standard:
        head += '   torch FLOPs'
    print(head)
    for name, (p_ref, f_ref, t1, t5) in PAPER.items():
        if args.standard:
            m = model.MODELS[name]()
        else:
            with torch.device('meta'):
                m = model.MODELS[name]()
        p, f = sum(t.numel() for t in m.parameters()), count_flops(m)
        ok &= (p == p_ref) and (f == f_ref)
        acc = f'{t1} / {t5}' if t5 is not None else f'{t1} / -'
        line = f'{name:8s} {p:14,d} {p_ref:14,d} {f:14,d} {f_ref:14,d}  {acc}'
        if args.standard:
            line += f'   {count_flops_standard(m):,d}'
        print(line + ('' if (p, f) == (p_ref, f_ref) else '   MISMATCH'))
    with torch.device('meta'):
        sn = ViTASSuperNet()
    n_sn = sum(t.numel() for t in sn.parameters())
    ok &= n_sn == 49_596_904
    print(f'\nsupernet (384 wide, 16 blocks, patches 14/16/32): {n_sn:,d} params (card 49,596,904)')
    print('expected FLOPs of a random subnet (exact): '
          + ', '.join(f'id_prop {p}: {expected_flops(p) / 1e9:.3f}G' for p in (0.0, 0.5, 1.0))
          + '  (card 1.856G / 0.962G / 0.067G)')
    grid = [round(i * 0.01, 2) for i in range(101)]
    inside = [p for p in grid if 0.9e9 <= expected_flops(p) <= 1.0e9]
    print(f'id_prop with expected FLOPs in [0.9G, 1.0G]: [{min(inside)}, {max(inside)}] '
          f'(card [0.48, 0.53])')
    ok &= (min(inside), max(inside)) == (0.48, 0.53)
    print('\nall equal to the card' if ok else '\nMISMATCH against the card')
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
