"""Params and FLOPs of LightViT-T/S/B next to the paper and the card's exact counts.

    python tables.py            # ~10-20 s on CPU

FLOPs: the paper's column is the official analytic multiply-accumulate count (``LightViT.flops``); torch's own
counter (``torch.utils.flop_counter.FlopCounterMode``, 2 FLOPs per MAC) is printed beside it, halved to MACs.
"""
import argparse

import torch
from torch.utils.flop_counter import FlopCounterMode

import model as M

PAPER = {  # params (M), FLOPs (G), ImageNet top-1 / top-5: official README
    'lightvit_tiny': (9.4, 0.7, 78.7, 94.4),
    'lightvit_small': (19.2, 1.7, 80.9, 95.3),
    'lightvit_base': (35.2, 3.9, 82.1, 95.9),
}
CARD = {  # exact counts of the official constructors (spec card)
    'lightvit_tiny': (9_377_698, 733_224_192),
    'lightvit_small': (19_200_248, 1_742_950_016),
    'lightvit_base': (35_195_653, 3_922_873_344),
}
BASELINES = {  # params, GMACs as the card re-counted them
    'ResNet-18 (torchvision)': (11_689_512, 1.814),
    'DeiT-Tiny (torchvision ViT, patch 16, dim 192, depth 12, heads 3)': (5_717_416, None),
}


def torch_macs(net, size=224):
    net.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(torch.zeros(1, 3, size, size))
    return counter.get_total_flops() / 2


def deit_tiny():
    from torchvision.models.vision_transformer import VisionTransformer
    return VisionTransformer(image_size=224, patch_size=16, num_layers=12, num_heads=3, hidden_dim=192,
                             mlp_dim=768, num_classes=1000)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--no-baselines', action='store_true', help='skip the ResNet-18 / DeiT-Tiny rows')
    args = parser.parse_args(argv)
    torch.set_grad_enabled(False)

    head = (f"{'model':<15}{'params paper':>13}{'card exact':>12}{'ours':>12}  {'FLOPs paper':>11}"
            f"{'card MACs':>15}{'ours (analytic)':>17}{'torch GFLOPs':>14}{'= GMACs':>9}  match")
    print(head)
    print('-' * len(head))
    all_ok = True
    for arch, (p_params, p_flops, top1, top5) in PAPER.items():
        net = getattr(M, arch)()
        params = sum(p.numel() for p in net.parameters())
        analytic = net.flops((3, 224, 224))
        counted = torch_macs(net)
        c_params, c_macs = CARD[arch]
        ok = (params == c_params and analytic == c_macs and round(params / 1e6, 1) == p_params
              and round(analytic / 1e9, 1) == p_flops)
        all_ok &= ok
        print(f"{arch:<15}{p_params:>12.1f}M{c_params:>12,}{params:>12,}  {p_flops:>10.1f}G{c_macs:>15,}"
              f"{analytic:>17,}{2 * counted / 1e9:>14.3f}{counted / 1e9:>9.3f}  {'yes' if ok else 'NO'}")
    print('\nFLOPs in the paper = multiply-accumulates (MACs); torch\'s FlopCounterMode counts 2 FLOPs per MAC.\n'
          'The analytic count leaves the window area out of the local-attention term and has no kv_global term\n'
          '(as the official formula); torch counts every matmul, hence about 5% more.')
    print('ImageNet top-1 / top-5 (paper, 300 epochs on 8 GPUs; not reproduced on CPU): ' +
          ', '.join(f'{a.split("_")[1]} {v[2]} / {v[3]}' for a, v in PAPER.items()))

    if not args.no_baselines:
        import torchvision
        print(f"\n{'baseline':<68}{'params':>12}{'card':>12}{'torch GMACs':>13}")
        for name, net in (('ResNet-18 (torchvision)', torchvision.models.resnet18()),
                          ('DeiT-Tiny (torchvision ViT, patch 16, dim 192, depth 12, heads 3)', deit_tiny())):
            params = sum(p.numel() for p in net.parameters())
            print(f'{name:<68}{params:>12,}{BASELINES[name][0]:>12,}{torch_macs(net) / 1e9:>13.3f}')
    print(f"\nall LightViT rows equal the paper and the card: {'yes' if all_ok else 'NO'}")
    return all_ok


if __name__ == '__main__':
    raise SystemExit(0 if main() else 1)
