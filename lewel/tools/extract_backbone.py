"""Extract the online backbone of a LEWEL checkpoint as a torchvision ResNet state_dict (official
``utils/extract_backbone.py``): keys ``[module.]online_net.backbone.*`` (LEWEL_B) or ``encoder_q.backbone.*``
(LEWEL_M) lose their prefix, so the result loads into ``torchvision.models.resnet50()`` with ``strict=False``
(only ``fc`` missing).  Works on our ``last.pth`` and on the official ``{'state_dict': ...}`` files.

    python tools/extract_backbone.py output/lewel/last.pth backbone.pth
"""
import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from eval.utils import backbone_state_dict  # noqa: E402


def extract(src, dst):
    state = backbone_state_dict(torch.load(src, map_location='cpu', weights_only=False))
    if not state:
        raise SystemExit(f"error: '{src}' holds no online_net.backbone.* (or encoder_q.backbone.*) weights")
    torch.save({'state_dict': state}, dst)
    return state


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('src', help='LEWEL pre-training checkpoint')
    parser.add_argument('dst', help='output file: {"state_dict": torchvision ResNet keys}')
    args = parser.parse_args(argv)
    state = extract(args.src, args.dst)
    print(f'wrote {len(state)} tensors to {args.dst}')


if __name__ == '__main__':
    main()
