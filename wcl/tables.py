"""Print the card's CPU-checkable numbers next to ours: parameter counts and FLOPs of the WCL models.

    python tables.py
"""
import torch
from torch.utils.flop_counter import FlopCounterMode

from models import WCL


def n_params(m):
    return sum(p.numel() for p in m.parameters())


def flops(module, x):
    module.eval()
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        module(x)
    return fc.get_total_flops()


def main():
    repo, paper = WCL('resnet50'), WCL('resnet50', dim_hidden=2048, dim=128)
    rows = [
        ('backbone ResNet-50 params', 23_508_032, n_params(repo.net)),
        ('head (repo 4096/256) params', 26_239_232, n_params(repo.head1)),
        ('head (paper 2048/128) params', 8_663_168, n_params(paper.head1)),
        ('total (repo heads) params', 75_986_496, n_params(repo)),
        ('total (paper heads) params', 40_834_368, n_params(paper)),
    ]
    x = torch.randn(1, 3, 224, 224)
    feat = torch.randn(2, 2048)
    rows += [
        ('backbone FLOPs @224 (2*MAC), G', 8.17, round(flops(repo.net, x) / 1e9, 2)),
        ('both heads FLOPs per image, G', 0.105, round(flops(_Heads(repo), feat) / 2 / 1e9, 3)),
    ]
    print(f"{'quantity':36s} {'card':>14s} {'ours':>14s}  match")
    for name, card, ours in rows:
        print(f'{name:36s} {card:>14,} {ours:>14,}  {"yes" if card == ours else "NO"}')


class _Heads(torch.nn.Module):
    def __init__(self, m):
        super().__init__()
        self.h1, self.h2 = m.head1, m.head2

    def forward(self, h):
        return self.h1(h), self.h2(h)


if __name__ == '__main__':
    main()
