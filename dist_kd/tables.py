"""Parameters and FLOPs of the CIFAR-100 and ImageNet models of the DIST tables, next to the spec's numbers.

    python tables.py

FLOPs are ``torch.utils.flop_counter.FlopCounterMode`` totals (2 x multiply-accumulates) of one image at 32x32
(CIFAR, 100 classes) or 224x224 (ImageNet, 1000 classes), counted on the meta device (no computation).
timm models (EfficientNet-B0, Swin) are listed only when timm is installed.
"""
import torch
from torch.utils.flop_counter import FlopCounterMode

import models

# (our model name, classes, input size, params of the official constructor, FLOPs, role in the tables)
TABLE = [
    ('cifar_resnet20', 100, 32, 278_324, 81.6e6, 'CIFAR student (teacher ResNet-56)'),
    ('cifar_resnet56', 100, 32, 861_620, 251.5e6, 'CIFAR teacher'),
    ('cifar_resnet8x4', 100, 32, 1_233_540, 354.1e6, 'CIFAR student (teacher ResNet-32x4)'),
    ('cifar_resnet32x4', 100, 32, 7_433_860, 2.166e9, 'CIFAR teacher'),
    ('cifar_wrn_40_1', 100, 32, 569_780, 166.6e6, 'CIFAR student (teacher WRN-40-2)'),
    ('cifar_wrn_40_2', 100, 32, 2_255_156, 655.2e6, 'CIFAR teacher'),
    ('cifar_MobileNetV2', 100, 32, 812_836, 13.0e6, 'CIFAR student (teacher ResNet-50)'),
    ('cifar_ShuffleV1', 100, 32, 949_258, 77.4e6, 'CIFAR student (teacher ResNet-32x4)'),
    ('cifar_ShuffleV2', 100, 32, 1_355_528, 89.0e6, 'CIFAR student (teacher ResNet-32x4)'),
    ('cifar_ResNet50', 100, 32, 23_705_252, 2.596e9, 'CIFAR teacher'),
    ('tv_resnet18', 1000, 224, 11_689_512, 3.63e9, 'ImageNet student'),
    ('tv_resnet34', 1000, 224, 21_797_672, 7.33e9, 'ImageNet student / teacher'),
    ('tv_resnet50', 1000, 224, 25_557_032, 8.18e9, 'ImageNet teacher'),
    ('tv_resnet101', 1000, 224, 44_549_160, 15.60e9, 'ImageNet teacher'),
    ('tv_resnet152', 1000, 224, 60_192_808, 23.03e9, 'ImageNet teacher'),
    ('tv_mobilenet_v2', 1000, 224, 3_504_872, 0.60e9, 'ImageNet B2 student'),
    ('mobilenet_v1', 1000, 224, 4_231_976, 1.14e9, 'ImageNet B1 student (teacher ResNet-50)'),
    ('timm_tf_efficientnet_b0', 1000, 224, 5_288_548, 0.77e9, 'ImageNet B2 student (needs timm)'),
    ('timm_swin_tiny_patch4_window7_224', 1000, 224, 28_288_354, 8.98e9, 'ImageNet B2 student (needs timm)'),
    ('timm_swin_large_patch4_window7_224', 1000, 224, 196_532_476, 68.95e9, 'ImageNet B2 teacher (needs timm)'),
]


def count(name, num_classes, size):
    """(params, FLOPs) of one model on one image, built and run on the meta device."""
    with torch.device('meta'):
        model = models.build_model(name, num_classes)
        x = torch.empty(1, 3, size, size)
    model.eval()
    params = sum(p.numel() for p in model.parameters())
    with FlopCounterMode(display=False) as counter:
        model(x)
    return params, counter.get_total_flops()


def _fmt_flops(f):
    return f'{f / 1e9:.3f} G' if f >= 1e9 else f'{f / 1e6:.1f} M'


def rows():
    """One dict per table row; ``ours_*`` are None when the model needs an absent optional package."""
    out = []
    for name, classes, size, params, flops, role in TABLE:
        try:
            ours_params, ours_flops = count(name, classes, size)
        except ImportError:
            ours_params = ours_flops = None
        out.append({'model': name, 'classes': classes, 'size': size, 'paper_params': params, 'paper_flops': flops,
                    'ours_params': ours_params, 'ours_flops': ours_flops, 'role': role})
    return out


def main():
    header = f"{'model':<36} {'input':>7} {'params (spec)':>14} {'params (ours)':>14} {'FLOPs (spec)':>12} " \
             f"{'FLOPs (ours)':>12}  role"
    print(header)
    print('-' * len(header))
    for r in rows():
        if r['ours_params'] is None:
            ours_p, ours_f = 'needs timm', '-'
        else:
            ours_p, ours_f = f"{r['ours_params']:,}", _fmt_flops(r['ours_flops'])
        print(f"{r['model']:<36} {r['size']:>4}px {r['paper_params']:>14,} {ours_p:>14} "
              f"{_fmt_flops(r['paper_flops']):>12} {ours_f:>12}  {r['role']}")


if __name__ == '__main__':
    main()
