"""Print the spec card's parameter counts and FLOPs next to ours: ``python tables.py``.

Counts come from our constructors with the official sizes (ResNet-50, D = 256, hidden 4096, 4 heads); the card's
figures were computed from the official constructors.  FLOPs are ``torch.utils.flop_counter.FlopCounterMode``
totals (2 x multiply-accumulates) for one 224 px image.  Models are built on the ``meta`` device (shapes only),
so this takes a few seconds.
"""
import torch
from torch.utils.flop_counter import FlopCounterMode

import backbones
import models

META = torch.device('meta')


def n_params(module, trainable_only=False):
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def build():
    with META:
        return models.LEWELB_EMAN(backbones.resnet50_encoder, dim=256, hid_dim=4096, num_heads=4)


def param_rows(model=None):
    """(what, card's figure, ours)."""
    model = model or build()
    return [
        ('online backbone (ResNet-50, no fc)', 23_508_032, n_params(model.online_net.backbone)),
        ('neck proj (g): 2048-4096(BN)-256', 9_445_376, n_params(model.online_net.neck.proj)),
        ('neck proj_obj (g_a): same shape', 9_445_376, n_params(model.online_net.neck.proj_obj)),
        ('predictor: 256-4096(BN)-256', 2_105_344, n_params(model.predictor)),
        ('predictor_obj', 2_105_344, n_params(model.predictor_obj)),
        ('trainable total', 46_609_472, n_params(model, trainable_only=True)),
        ('target_net (backbone + neck)', 42_398_784, n_params(model.target_net)),
        ('whole module', 89_008_256, n_params(model)),
    ]


def gflops(module, size=224):
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        module(torch.zeros(1, 3, size, size, device=META))
    return counter.get_total_flops() / 1e9


def flop_rows(model=None):
    """(what, card's GFLOPs, ours)."""
    model = model or build()
    model.train()  # batch-1 forward: BN1d of the neck pools over the 50 / 64 tokens
    return [
        ('online_net forward (backbone + neck) @224', 10.34, gflops(model.online_net)),
        ('backbone alone @224', 8.17, gflops(model.online_net.backbone)),
    ]


def main():
    model = build()
    print(f'{"parameters":40s} {"card":>14s} {"ours":>14s}')
    for what, card, ours in param_rows(model):
        print(f'{what:40s} {card:>14,} {ours:>14,}  {"ok" if ours == card else "DIFFERS"}')
    print(f'\n{"FLOPs per image (GFLOPs, 2 x MAC)":40s} {"card":>14s} {"ours":>14s}')
    for what, card, ours in flop_rows(model):
        print(f'{what:40s} {card:>14.2f} {ours:>14.2f}  {"ok" if round(ours, 2) == card else "DIFFERS"}')


if __name__ == '__main__':
    main()
