"""Print the CPU-checkable rows of the card next to ours, and the paper's GPU-only tables for reference.

    python tables.py
"""
import torch

from align import AlignModules
from losses import MaskModule, MasKDLoss, SegMasKDLoss


def count(m):
    return sum(p.numel() for p in m.parameters())


def main():
    rows = [
        ('one detection level, C=256, T=6, with weight head', 593_158, count(MaskModule(256, 6))),
        ('  tokens', 1_536, MaskModule(256, 6).mask_token.numel()),
        ('  conv3x3', 590_080, count(MaskModule(256, 6).prob[0])),
        ('  conv1x1', 1_542, count(MaskModule(256, 6).prob[2])),
        ('5 detection levels with weight heads', 2_965_790, count(MasKDLoss([256] * 5))),
        ('5 detection levels without weight heads', 7_680, count(MasKDLoss([256] * 5, weight_mask=False))),
        ('segmentation, C=19, T=8', 152, count(SegMasKDLoss(19, 8))),
    ]
    print('MasKD module parameters (spec card / official modules vs ours)')
    print(f"{'module':<52}{'paper':>12}{'ours':>12}")
    for name, paper, ours in rows:
        print(f'{name:<52}{paper:>12,}{ours:>12,}{"" if paper == ours else "   MISMATCH"}')
    print(f"{'5 align convs 256->256 (1x1, bias; trained with the student)':<52}{'-':>12}"
          f'{count(AlignModules(256, 256, 5)):>12,}')
    print()
    print('COCO val2017 box AP (need 8 GPUs x 1-2 days per run; paper numbers, official README)')
    print(f"{'student (baseline)':<28}{'teacher':<34}{'MasKD':>8}")
    for s, t, ap in [('Faster R-CNN R50 (38.4)', 'Faster R-CNN R101 (39.8)', 41.0),
                     ('RetinaNet R50 (37.4)', 'RetinaNet R101 (38.9)', 39.9),
                     ('FCOS R50 (38.5)', 'FCOS R101 (40.8)', 42.9),
                     ('Faster R-CNN R50 (38.4)', 'Cascade Mask R-CNN X101 (45.6)', 42.7),
                     ('RetinaNet R50 (37.4)', 'RetinaNet X101 (41.0)', 41.0),
                     ('RepPoints R50 (38.6)', 'RepPoints X101 (44.2)', 42.5)]:
        print(f'{s:<28}{t:<34}{ap:>8.1f}')
    print()
    print('Cityscapes mIoU, teacher DeepLabV3-R101 (val 78.07); paper numbers')
    for s, v, te in [('DeepLabV3-R18', 77.00, 75.59), ('DeepLabV3-R18 (random init)', 73.95, 73.74),
                     ('DeepLabV3-MobileNetV2', 75.26, 74.23), ('PSPNet-R18', 75.34, 74.61)]:
        print(f'{s:<32}val {v:6.2f}  test {te:6.2f}')


if __name__ == '__main__':
    torch.manual_seed(0)
    main()
