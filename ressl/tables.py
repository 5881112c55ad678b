"""Print the spec card's parameter counts, queue size and FLOPs next to ours: ``python tables.py``.

Counts are computed from our constructors; the card's figures were computed from the official ones.
FLOPs are ``torch.utils.flop_counter.FlopCounterMode`` totals (2 x multiply-accumulates) for one image.
Models are built on the ``meta`` device: shapes only, no memory and no arithmetic, so this takes a second.
"""
import torch
from torch.utils.flop_counter import FlopCounterMode

import models


def n_params(module, trainable_only=False):
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


META = torch.device('meta')


def param_rows():
    """(what, card's figure, ours)."""
    with META:
        r50 = models.BackBone('resnet50')                                # ImageNet recipe: 2048-4096-512 head
        pair = models.ReSSL('resnet50', dim=512, K=131072)               # the full ImageNet model, queue included
        r18_imagenet = models.BackBone('resnet18')                       # ImageNet stem, default head
        r18_small = models.BackBone(models.resnet18(small_input=True, bn_splits=8), hidden_dim=2048, dim=128)
    queue_mib = pair.queue.numel() * pair.queue.element_size() / 2 ** 20
    return [
        ('ResNet-50 backbone (no fc)', 23_508_032, n_params(r50.net)),
        ('projection head 2048-4096-512', 10_490_368, n_params(r50.head)),
        ('student encoder (ResNet-50 + head)', 33_998_400, n_params(r50)),
        ('student + teacher', 67_996_800, n_params(pair)),
        ('  of which trainable (teacher frozen)', 33_998_400, n_params(pair, trainable_only=True)),
        ('ResNet-18 (ImageNet stem) + default head', 15_375_424, n_params(r18_imagenet)),
        ('ResNet-18 CIFAR stem (small recipe)', 11_168_832, n_params(r18_small.net)),
        ('small-recipe head 512-2048-128', 1_312_896, n_params(r18_small.head)),
        ('queue 512 x 131072 fp32, MiB', 256, queue_mib),
    ]


def gflops(module, size):
    module.eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        module(torch.zeros(1, 3, size, size, device=META))
    return counter.get_total_flops() / 1e9


def flop_rows():
    """(what, card's GFLOPs, ours)."""
    with META:
        r50 = models.BackBone('resnet50')
        r18_small = models.resnet18(small_input=True)
    return [
        ('ResNet-50 @224', 8.17, gflops(r50.net, 224)),
        ('ResNet-50 + head @224', 8.20, gflops(r50, 224)),
        ('ResNet-18 CIFAR stem @32', 1.11, gflops(r18_small, 32)),
        ('ResNet-18 CIFAR stem @64', 4.44, gflops(r18_small, 64)),
    ]


def main():
    torch.manual_seed(0)
    print(f'{"parameters":44s} {"card":>14s} {"ours":>14s}')
    for what, card, ours in param_rows():
        print(f'{what:44s} {card:>14,} {ours:>14,.0f}  {"ok" if ours == card else "DIFFERS"}')
    print(f'\n{"FLOPs per image (GFLOPs, 2 x MAC)":44s} {"card":>14s} {"ours":>14s}')
    for what, card, ours in flop_rows():
        print(f'{what:44s} {card:>14.2f} {ours:>14.2f}  {"ok" if round(ours, 2) == card else "DIFFERS"}')


if __name__ == '__main__':
    main()
