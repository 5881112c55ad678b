"""The CPU-checkable numbers of K-shot NAS next to the card's / paper's: ``python tables.py`` (seconds).

1. params / FLOPs (MACs at 224x224) of the card's reference paths of the ImageNet space, by the closed form and
   by counting the built stand-alone network (parameters + conv/linear hooks);
2. the memory cost of K supernets (question 3 of the card): parameters of the whole ImageNet supernet per K;
3. the rank of the combined weights of one op over many paths (<= K), for K = 1, 2, 4, 8;
4. the ImageNet table of the paper (GPU rows, not run here).
"""
import argparse

import torch

import search_space as ss
from model import StandaloneNet, count_macs, count_parameters
from ops import KShotConv2d

FIRST = [0, 4, 8, 12, 16, 20]
REFERENCE = [  # (name, path, card params (M), card MACs (M))
    ('smallest legal path (k3e3 at stage-first layers, identity elsewhere)',
     [0 if i in FIRST else 12 for i in range(21)], 2.16, 108.9),
    ('all k3e3, no SE', [0] * 21, 3.20, 291.1),
    ('all k7e6 with SE', [11] * 21, 9.12, 697.5),
]
PAPER = [  # (model, FLOPs, params, top-1, top-5, search cost GPU-days) -- as tabulated by later work (card)
    ('K-shot-NAS-B', '332M', '6.2M', '77.2', '93.3', '12'),
    ('GreedyNAS-B', '324M', '5.2M', '76.8', '93.0', '7'),
    ('MCT-NAS-B', '327M', '6.3M', '76.9', '93.4', '12'),
    ('SPOS', '328M', '-', '76.2', '-', '12'),
]


def supernet_params(K, space=ss.IMAGENET):
    """Parameters of the K-shot ImageNet supernet (every candidate of every layer, K copies; one classifier)."""
    total = 0
    size = ss.conv_out(space.image_size, space.stem_stride)
    total += 29 * space.stem_channels  # stem conv + BN
    p, _, size = ss.mbconv_cost(space.stem_channels, space.first_channels, 1, 1, 3, False, size)
    total += p
    for inp, oup, stride, _ in space.layers:
        for spec in space.op_specs:
            if spec is not None:
                total += ss.mbconv_cost(inp, oup, stride, spec[1], spec[0], spec[2], 8)[0]
    total += space.layers[-1][1] * space.last_channels + 2 * space.last_channels
    head = space.last_channels * space.num_classes + space.num_classes
    return K * total + head


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--no-build', action='store_true', help='skip the built-network count (closed form only)')
    args = parser.parse_args()

    print('1. Reference paths of the ImageNet space (224x224; MACs of conv + linear layers)')
    print(f'   {"path":<70} {"card":>17} {"ours (closed form)":>24} {"ours (built net)":>22}')
    for name, arch, p_card, m_card in REFERENCE:
        params, macs = ss.count_params(arch), ss.count_flops(arch)
        built = '-'
        if not args.no_build:
            net = StandaloneNet(arch)
            built = f'{count_parameters(net) / 1e6:.3f}M / {count_macs(net, (3, 224, 224)) / 1e6:.1f}M'
        print(f'   {name:<70} {p_card:>5.2f}M / {m_card:>6.1f}M {params / 1e6:>10.3f}M / {macs / 1e6:>7.1f}M '
              f'{built:>22}')

    print('\n2. Parameters of the whole ImageNet supernet (21 layers x 12 MBConv candidates), K copies')
    for K in (1, 2, 3, 4, 8):
        print(f'   K = {K}: {supernet_params(K) / 1e6:8.2f}M parameters (x2 with SGD momentum)')

    print('\n3. Rank of the combined weights of one op (conv 40 -> 240) over 64 paths (random simplex codes)')
    torch.manual_seed(0)
    for K in (1, 2, 4, 8):
        conv = KShotConv2d(40, 240, 1, weight_num=K)
        codes = torch.distributions.Dirichlet(torch.ones(K)).sample((64,))
        M = torch.stack([conv.combined(c)[0].flatten() for c in codes], 1)
        print(f'   K = {K}: rank {int(torch.linalg.matrix_rank(M))} (<= K; one-shot sharing is rank 1)')

    print('\n4. ImageNet, mobile setting (the card; these rows need a GPU cluster and are not run here)')
    print(f'   {"model":<14} {"FLOPs":>6} {"params":>7} {"top-1":>6} {"top-5":>6} {"GPU-days":>9}')
    for row in PAPER:
        print(f'   {row[0]:<14} {row[1]:>6} {row[2]:>7} {row[3]:>6} {row[4]:>6} {row[5]:>9}')
    print('   K-shot-NAS-B\'s path is not published: its FLOPs/params cannot be recomputed here.')


if __name__ == '__main__':
    main()
