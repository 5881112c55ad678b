"""Prints the model-size / compute rows next to the paper: ``python tables.py``.

Params of the paper model (5.40M; card's exact count 5,401,351), FLOPs per second of audio (convolutions only,
torch FlopCounterMode on a (1, 2, 101, 161) input; card 7.51 G), and the order / sharing ablation params.
"""
import torch
from torch.utils.flop_counter import FlopCounterMode

from model import TaylorSENet, num_params

ROWS = [
    ('paper model (Q=3, IN)', {}, 5_401_351, '5.40M'),
    ('Q=0 (0th-order term only)', {'order_num': 0}, 2_934_337, None),
    ('Q=1', {'order_num': 1}, 3_756_675, None),
    ('Q=2', {'order_num': 2}, 4_579_013, None),
    ('Q=4', {'order_num': 4}, 6_223_689, None),
    ('Q=5', {'order_num': 5}, 7_046_027, None),
    ('Q=3, shared derivative operator', {'is_param_share': True}, 3_756_675, None),
    ('Q=3, shared encoder', {'is_encoder_share': True}, 4_659_271, None),
    ('inter_connect=add', {'inter_connect': 'add'}, 5_292_807, None),
    ('norm BN / cLN (affine)', {'norm_type': 'cLN'}, 5_423_143, None),
    ('plain U-Net (is_u2=False)', {'is_u2': False}, 3_476_743, None),
]


def conv_flops_per_second(net):
    """FLOPs of the convolution ops for 1 s of 16 kHz audio (101 frames x 161 bins)."""
    net.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        net(torch.randn(1, 2, 101, 161))
    counts = fc.get_flop_counts().get('Global', {})
    return sum(v for k, v in counts.items() if 'convolution' in str(k))


def main():
    print(f"{'configuration':36s} {'ours':>11s} {'card':>11s}  paper")
    for name, kw, card, paper in ROWS:
        n = num_params(TaylorSENet(**kw))
        flag = '' if n == card else '  MISMATCH'
        print(f'{name:36s} {n:>11,d} {card:>11,d}  {paper or "-"}{flag}')
    flops = conv_flops_per_second(TaylorSENet())
    print(f"\nconv FLOPs per second of audio: {flops / 1e9:.2f} G (card: 7.51 G FLOPs = 3.75 G MACs; later papers "
          f"list 6.2 G MACs/s with a tool counting more ops)")


if __name__ == '__main__':
    main()
