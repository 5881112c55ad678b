"""The CPU-checkable rows of the spec card, ours next to the card's / paper's numbers.

    python tables.py            # parameter counts, encoder MACs, exact equivalences (Swin-B w7, 224 px)
    python tables.py --quick    # parameter counts and the DP example only
"""
import argparse
import os
import sys

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import group_window_attention as gwa  # noqa: E402
import model_factory  # noqa: E402

CARD_PARAMS = {  # encoder, MAE total (trainable)
    'green_mim_swin_base_patch4_dec512b1': (86_743_224, 92_022_968, 91_997_880),
    'green_mim_swin_base_patch4_win14_dec512b1': (86_917_944, 92_197_688, 92_172_600),
    'green_mim_swin_large_patch4_win14_dec512b1': (195_257_556, 200_799_444, 200_774_356),
}
CARD_MACS = (3.897e9, 15.430e9)  # Swin-B w7 encoder, 12/49 visible vs all visible (official code)


def params_table():
    print('Parameter counts (card: measured with the official code)')
    print(f"{'model':45s} {'encoder ours':>13s} {'card':>13s} {'MAE ours':>13s} {'card':>13s} "
          f"{'trainable ours':>15s} {'card':>13s}")
    for name, (enc, tot, tr) in CARD_PARAMS.items():
        with torch.device('meta'):
            m = model_factory.get_pretrain_model(name)
        e = sum(p.numel() for p in m.encoder.parameters())
        t = sum(p.numel() for p in m.parameters())
        r = sum(p.numel() for p in m.parameters() if p.requires_grad)
        print(f'{name:45s} {e:13,d} {enc:13,d} {t:13,d} {tot:13,d} {r:15,d} {tr:13,d}  '
              f"{'match' if (e, t, r) == (enc, tot, tr) else 'DIFFERENT'}")


def dp_example():
    sizes, groups = gwa.group_windows(7, [3, 5, 2, 7, 6, 1, 4, 4])
    print(f'\nDP grouping, w = [3,5,2,7,6,1,4,4], g = 7: sizes {sizes}, groups {groups} '
          f'(card: [7,7,7,7,4], [[1,2],[3],[4,5],[0,6],[7]])')


def _mask(L=49, keep=12, seed=0):
    noise = torch.rand(1, L, generator=torch.Generator().manual_seed(seed))
    m = torch.ones(1, L, dtype=torch.bool)
    m[0, noise.argsort(1)[0, :keep]] = False
    return m


@torch.no_grad()
def macs_and_equivalences():
    torch.manual_seed(0)
    mae = model_factory.get_pretrain_model('green_mim_swin_base_patch4_dec512b1').eval()
    enc = mae.encoder
    x = torch.randn(1, 3, 224, 224)
    mask, full = _mask(), torch.zeros(1, 49, dtype=torch.bool)
    macs = []
    for m in (mask, full):
        with FlopCounterMode(display=False) as fc:
            enc(x, m)
        macs.append(fc.get_total_flops() / 2)
    print('\nSwin-B w7 encoder MACs per 224 px image (torch FlopCounterMode / 2)')
    print(f'  12/49 units visible: ours {macs[0] / 1e9:.3f} G   card {CARD_MACS[0] / 1e9:.3f} G')
    print(f'  all visible (dense): ours {macs[1] / 1e9:.3f} G   card {CARD_MACS[1] / 1e9:.3f} G')
    print(f'  ratio: ours {macs[1] / macs[0]:.2f}x   card {CARD_MACS[1] / CARD_MACS[0]:.2f}x')

    x = torch.randn(2, 3, 224, 224)
    d1 = (enc(x, full) - enc.forward_dense(x)).abs().max().item()
    ref = enc(x, mask)
    orig = gwa.group_windows
    gwa.group_windows = lambda g, w: (list(w), [[i] for i in range(len(w))])
    try:
        one = enc(x, mask)
    finally:
        gwa.group_windows = orig
    prep = gwa.GroupingModule.prepare
    gwa.GroupingModule.prepare = lambda self, c, n: (setattr(self, '_mode', 'masking'), self._prepare_masking(c))[1]
    try:
        masking = enc(x, mask)
    finally:
        gwa.GroupingModule.prepare = prep
    print('\nExact equivalences (Swin-B w7, batch 2, float32)')
    print(f'  all units visible vs a dense Swin with the same weights: max |diff| {d1:.1e}   (card: 2.4e-6)')
    print(f'  one window per group vs the DP grouping:                 max |diff| '
          f'{(one - ref).abs().max().item():.1e}   (card: bit-identical)')
    print(f'  masking mode everywhere vs grouping/masking modes:       max |diff| '
          f'{(masking - ref).abs().max().item():.1e}   (card: 3e-6)')


def main(argv=None):
    ap = argparse.ArgumentParser(description='GreenMIM: CPU-checkable rows of the card')
    ap.add_argument('--quick', action='store_true')
    args = ap.parse_args(argv)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    params_table()
    dp_example()
    if not args.quick:
        macs_and_equivalences()


if __name__ == '__main__':
    main()
