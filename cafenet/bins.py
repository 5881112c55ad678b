"""FLOPs-sensitive bins (CafeNet, Sec. "FLOPs-sensitive bins"; the rule of the authors' BCNet-V1 helper).

The channels of layer l are grouped into bins of ``b_l`` channels and widths are counted in bins. A layer whose
channels are cheap gets big bins, an expensive one small bins, so that every bin stands for a comparable FLOPs
increment:

    b_l = 2 ** ceil(log2(max_k F_k / F_l)),  clipped to [min_bin, max_bin],

with ``F_l`` the FLOPs that one channel of layer l adds (``CafeSupernet.get_layer_flops``). When ``b_l`` does
not divide the layer's ``C_l`` channels, the helper tries ``b_l * 9/8`` (if ``C_l % 9 == 0`` and ``b_l % 8 ==
0``), then ``b_l * 5/4`` (if ``C_l % 5 == 0`` and ``b_l % 4 == 0``), and fails otherwise.
"""
import math

__all__ = ['flops_sensitive_bins', 'fix_divisibility', 'FALLBACKS']

FALLBACKS = ('error', 'halve')


def flops_sensitive_bins(flops_per_channel, min_bin=1, max_bin=32):
    """Per-layer bin sizes b_l = 2^ceil(log2(max F / F_l)) clipped to [min_bin, max_bin] (list of int)."""
    F = [float(f) for f in flops_per_channel]
    if not F:
        raise ValueError('flops_per_channel is empty')
    if any(not math.isfinite(f) or f <= 0 for f in F):
        raise ValueError(f'every FLOPs sensitivity must be finite and > 0, got {F}')
    if not 1 <= int(min_bin) <= int(max_bin):
        raise ValueError(f'need 1 <= min_bin <= max_bin, got ({min_bin}, {max_bin})')
    top = max(F)
    out = []
    for f in F:
        ratio = top / f
        e = math.ceil(math.log2(ratio) - 1e-12)          # exact powers of two stay themselves
        if 2.0 ** e < ratio:                               # guard the tolerance above
            e += 1
        out.append(int(min(max(2 ** max(e, 0), min_bin), max_bin)))
    return out


def fix_divisibility(bin_sizes, channels, fallback='error'):
    """Make every b_l divide C_l by the helper's 9/8 and 5/4 fix-ups (ValueError when impossible).

    ``fallback='halve'`` [our choice, off by default] instead halves b_l until it divides C_l (it always ends,
    at 1 at the latest); it is what standard backbones with widths such as 24 or 40 need at large bins.
    """
    if len(bin_sizes) != len(channels):
        raise ValueError(f'{len(bin_sizes)} bin sizes for {len(channels)} layers')
    if fallback not in FALLBACKS:
        raise ValueError(f'fallback must be one of {FALLBACKS}, got {fallback!r}')
    out = []
    for l, (b, C) in enumerate(zip(bin_sizes, channels)):
        b, C = int(b), int(C)
        if b < 1 or C < 1:
            raise ValueError(f'layer {l}: bin size {b} and channels {C} must be >= 1')
        if C % b != 0 and C % 9 == 0 and b % 8 == 0:
            b = b * 9 // 8
        if C % b != 0 and C % 5 == 0 and b % 4 == 0:
            b = b * 5 // 4
        if C % b != 0:
            if fallback == 'error':
                raise ValueError(f'layer {l}: bin size {int(bin_sizes[l])} does not divide its {C} channels, '
                                 f'even after the 9/8 and 5/4 fix-ups')
            b = int(bin_sizes[l])
            while C % b != 0:
                b //= 2
        out.append(b)
    return out
