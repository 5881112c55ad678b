"""Print the checkable numbers of the spec card next to ours: parameter counts and FLOPs of the networks.

    python tables.py

FLOPs count a multiply-add as 2 and include every Conv2d and Linear (bias adds, BN, activations and pooling
are not counted), for one image through the student wrapper (backbone + fc + projection head).
"""
import torch
import torch.nn as nn

import backbones
from models import ResNet, SimMatch


def count_params(module):
    return sum(p.numel() for p in module.parameters())


@torch.no_grad()
def count_flops(model, size):
    """2 x multiply-adds of every Conv2d / Linear for one ``3 x size x size`` image (a model built on the
    ``meta`` device is counted without computing anything)."""
    total = [0]

    def conv_hook(m, inp, out):
        total[0] += 2 * out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]

    def linear_hook(m, inp, out):
        total[0] += 2 * out.numel() * m.in_features

    handles = [m.register_forward_hook(conv_hook if isinstance(m, nn.Conv2d) else linear_hook)
               for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    model.eval()
    model(torch.zeros(1, 3, size, size, device=next(model.parameters()).device))
    for h in handles:
        h.remove()
    return total[0]


ROWS = [
    # name, encoder, classes, image size, card: backbone+fc, head, GFLOPs (None: not on the card)
    ('ResNet-50 (ImageNet)', backbones.resnet50_encoder, 1000, 224, 25_557_032, 4_458_624, 8.187),
    ('WRN-28-2 (CIFAR-10/SVHN)', backbones.wrn_28_2, 10, 32, 1_467_626, 33_024, 0.429),
    ('WRN-28-8 (CIFAR-100)', backbones.wrn_28_8, 100, 32, 23_401_028, 328_320, None),
    ('WRN-37-2 (STL-10)', backbones.wrn_var_37_2, 10, 96, 5_929_450, 98_688, None),
    ('WRN-22-1-s2 (embedded default)', backbones.wrn_22_1_s2, 10, 32, None, None, None),
]


def _fmt(v, spec='{:,}'):
    return '-' if v is None else spec.format(v)


def main():
    print(f"{'network':30s} {'backbone+fc card':>17s} {'ours':>12s} {'head card':>10s} {'ours':>10s} "
          f"{'GFLOPs card':>11s} {'ours':>7s}")
    for name, enc, classes, size, body_card, head_card, gflops_card in ROWS:
        with torch.device('meta'):
            net = ResNet(enc, classes)
        body = count_params(net.backbone) + count_params(net.fc)
        gflops = count_flops(net, size) / 1e9
        print(f'{name:30s} {_fmt(body_card):>17s} {body:>12,} {_fmt(head_card):>10s} {count_params(net.head):>10,} '
              f'{_fmt(gflops_card, "{:.3f}"):>11s} {gflops:>7.3f}')
    with torch.device('meta'):
        net = ResNet(backbones.resnet50_encoder, 1000)
        sm = SimMatch(backbones.resnet50_encoder, num_classes=1000, K=13000)
    print(f"ImageNet wrapper total: card 30,015,656, ours {count_params(net):,} (backbone card 23,508,032, ours "
          f"{count_params(net.backbone):,}; fc card 2,049,000, ours {count_params(net.fc):,})")
    print(f'SimMatch module (student + teacher) parameters: card 60,031,312, ours {count_params(sm):,}; '
          f'buffers bank {tuple(sm.bank.shape)}, labels {tuple(sm.labels.shape)}, DA_queue {tuple(sm.DA_queue.shape)}')


if __name__ == '__main__':
    main()
