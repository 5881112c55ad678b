"""Checkpoint conversion.

* ``extract_backbone``: a GreenMIM pre-training checkpoint -> an encoder state_dict for fine-tuning (strip
  ``encoder.``, drop the decoder and the relative-position-index / attention-mask buffers).
* ``convert_patch_merging_order``: checkpoints trained before the official Jan-2023 fix concatenated the
  2x2 neighbourhood row-first ((0,0),(0,1),(1,0),(1,1)); ours uses Swin's (0,0),(1,0),(0,1),(1,1). Swapping
  the 2nd and 3rd C-sized blocks of ``downsample.norm.{weight,bias}`` and of the input dimension of
  ``downsample.reduction.weight`` gives the same function under our order.

    python extract_backbone.py checkpoint.pth backbone.pth [--legacy-merge-order]
"""
import argparse
import re

import torch

DROP_SUFFIXES = ('relative_position_index', 'attn_mask')


def extract_backbone(state_dict, prefix='encoder.'):
    return {k[len(prefix):]: v for k, v in state_dict.items()
            if k.startswith(prefix) and not k.endswith(DROP_SUFFIXES)}


def _swap_middle(t, dim):
    c = t.shape[dim] // 4
    a, b, cc, d = torch.split(t, c, dim=dim)
    return torch.cat([a, cc, b, d], dim=dim)


def convert_patch_merging_order(state_dict):
    """Row-first (pre-2023) patch-merging weights <-> Swin-order weights (the map is its own inverse)."""
    out = dict(state_dict)
    for k, v in state_dict.items():
        if re.search(r'downsample\.norm\.(weight|bias)$', k):
            out[k] = _swap_middle(v, 0)
        elif re.search(r'downsample\.reduction\.weight$', k):
            out[k] = _swap_middle(v, 1)
    return out


def load_state(path):
    state = torch.load(path, map_location='cpu', weights_only=False)
    for key in ('model', 'state_dict'):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            return state[key]
    return state


def main(argv=None):
    p = argparse.ArgumentParser(description='GreenMIM checkpoint -> fine-tuning backbone')
    p.add_argument('src')
    p.add_argument('dst')
    p.add_argument('--legacy-merge-order', action='store_true',
                   help='the source was trained with the pre-2023 row-first patch-merging order')
    args = p.parse_args(argv)
    state = load_state(args.src)
    if args.legacy_merge_order:
        state = convert_patch_merging_order(state)
    backbone = extract_backbone(state) if any(k.startswith('encoder.') for k in state) else state
    torch.save({'model': backbone}, args.dst)
    print(f'wrote {len(backbone)} tensors to {args.dst}')


if __name__ == '__main__':
    main()
