"""Print the card's CPU-checkable numbers next to ours: parameter counts (and, with --flops, FLOPs per 48x48
input patch) of the single-task and six-task IPT models.

    python tables.py            # parameter counts (a few seconds per model)
    python tables.py --flops    # + FLOPs of one 48x48 forward per model (FlopCounterMode; matmul/conv)
"""
import argparse

import torch
from torch.utils.flop_counter import FlopCounterMode

from model import IPT, VisionTransformer

PARAMS = [  # (row, card, builder kwargs or a function of the model)
    ('single task x2 (1 query)', 115_460_419, dict(scales=(2,), num_queries=1)),
    ('single task x3', 115_645_059, dict(scales=(3,), num_queries=1)),
    ('single task x4', 115_608_131, dict(scales=(4,), num_queries=1)),
    ('single task x1 (denoise / derain)', 115_312_707, dict(scales=(1,), num_queries=1)),
    ('six-task pre-training model', 118_892_370, dict(scales=(2, 3, 4, 1, 1, 1), num_queries=6)),
]
FLOPS = {2: 66.65, 3: 67.54, 4: 69.46, 1: 65.94}  # G per 48x48 patch (matmul/conv only)


def n_params(m, trainable=True):
    return sum(p.numel() for p in m.parameters() if p.requires_grad or not trainable)


def attention_core_flops(module):
    """``softmax(QK^T) V`` of every attention: 2 matmuls of ``N x N x D`` MACs each (2 FLOPs per MAC). On CPU
    PyTorch runs them inside ``scaled_dot_product_attention`` (the fused CPU kernel), which FlopCounterMode
    does not count, so they are added analytically."""
    tokens = next(m.seq_length for m in module.modules() if isinstance(m, VisionTransformer))
    mhas = [m for m in module.modules() if isinstance(m, torch.nn.MultiheadAttention)]
    return sum(2 * 2 * tokens * tokens * m.embed_dim for m in mhas)


def flops(model, *inputs):
    model.eval()
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        model(*inputs)
    counted = fc.get_total_flops()
    sdpa = sum(v for k, v in fc.get_flop_counts().get('Global', {}).items() if 'attention' in str(k))
    return counted + (0 if sdpa else attention_core_flops(model))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--flops', action='store_true', help='also count FLOPs of one 48x48 forward')
    args = ap.parse_args(argv)
    rows = []
    x2 = None
    for name, card, kw in PARAMS:
        m = IPT(**kw)
        rows.append((f'{name} params', card, n_params(m)))
        if kw['scales'] == (2,):
            x2 = m
            b = m.body
            rows += [
                ('body (1 query) params', 114_899_328, n_params(b)),
                ('  encoder params', 47_837_952, n_params(b.encoder)),
                ('  decoder params', 63_777_024, n_params(b.decoder)),
                ('  one encoder layer', 3_986_496, n_params(b.encoder.layers[0])),
                ('  one decoder layer', 5_314_752, n_params(b.decoder.layers[0])),
                ('  token linear', 332_352, n_params(b.linear_encoding)),
                ('  residual MLP', 2_657_088, n_params(b.mlp_head)),
                ('  position embedding', 147_456, n_params(b.position_encoding)),
                ('  task embedding (1 query)', 147_456, n_params(b.query_embed)),
                ('one head params', 411_648, n_params(m.head[0])),
                ('tail x2 params', 149_443, n_params(m.tail[0])),
                ('frozen mean shift (non-trainable)', 24, n_params(m, False) - n_params(m)),
            ]
        if kw['scales'] == (2, 3, 4, 1, 1, 1):
            rows += [(f'tail x{s} params', card_t, n_params(m.tail[t]))
                     for t, s, card_t in [(1, 3, 334_083), (2, 4, 297_155), (3, 1, 1_731)]]
            if args.flops:
                x = torch.rand(1, 3, 48, 48) * 255
                rows += [(f'GFLOPs per 48x48 patch, x{s}', FLOPS[s], round(flops(m, x, t) / 1e9, 2))
                         for t, s in [(0, 2), (1, 3), (2, 4), (3, 1)]]
                rows.append(('GFLOPs of the body alone', 64.04,
                             round(flops(x2.body, torch.rand(1, 64, 48, 48), 0) / 1e9, 2)))
        del m
    tiny = IPT(n_feats=16, patch_size=24, patch_dim=3, num_heads=4, num_layers=1)
    rows.append(('tiny setting (n_feats 16, 24px, 4 heads, 1 layer), 6 tasks', 1_043_490, n_params(tiny)))
    if args.flops:
        rows.append(('tiny setting GFLOPs per 24x24 patch, x2', 0.148,
                     round(flops(tiny, torch.rand(1, 3, 24, 24) * 255, 0) / 1e9, 3)))
    print(f"{'quantity':62s} {'card':>14s} {'ours':>14s}  match")
    for name, card, ours in rows:
        same = card == ours if isinstance(card, int) else abs(card - ours) < 0.006
        print(f'{name:62s} {card:>14,} {ours:>14,}  {"yes" if same else "NO"}')
    return rows


if __name__ == '__main__':
    main()
