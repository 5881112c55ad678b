"""Width sampling of BCNet / BCNetV2: bilateral slices, uniform widths and stochastic complementary pairs.

A layer of C channels is split into B bins. A width of c bins is evaluated by two paths at once (the
bilaterally coupled principle): the left path uses bins [0, c) and the right path bins [B - c, B). Over all
widths every bin then serves the same number of paths, n + 1 for BCNet (c in 1..B), n - m + 1 for BCNetV2
(B = n + m bins, c in m..n).

Subnets are lists of per-layer bin intervals ``[lo, hi]`` (half-open in bins), as in the official release.
"""
import numpy as np

__all__ = ['bilateral_indices', 'width_range', 'complementary_pair', 'BCNetSampler']

COMPLEMENT_MODES = ('exact', 'official_v2')
ZERO_COMPLEMENT = ('skip', 'redraw')


def bilateral_indices(C, B, interval):
    """Channel slice ``(start, stop)`` of bin interval ``[lo, hi)`` in a layer of ``C`` channels, ``B`` bins.

    The official index rule: start = floor(lo * C / B), stop = ceil(hi * C / B) (exact integer arithmetic
    here). Left(c) = [0, c) and right(c) = [B - c, B) therefore have the same size, ceil(c * C / B).
    """
    lo, hi = int(interval[0]), int(interval[1])
    if not 0 <= lo < hi <= B:
        raise ValueError(f'bin interval [{lo}, {hi}) is empty or outside [0, {B})')
    return (lo * C) // B, -((-hi * C) // B)


def width_range(B, min_bins=1):
    """Range (lo, hi) of widths (in bins) that are sampled and searched.

    BCNet (min_bins = 1): c in [1, B]. BCNetV2 (min_bins = m > 1, the supernet enlarged to B = n + m bins):
    c in [m, B - m] = [m, n], which keeps every bin equally often in use.
    """
    if min_bins < 1 or (min_bins > 1 and B - min_bins < min_bins):
        raise ValueError(f'min_channel_bins={min_bins} does not fit channel_bins={B} '
                         f'(need 1 <= m and, for m > 1, 2m <= B)')
    return (1, B) if min_bins == 1 else (min_bins, B - min_bins)


def complementary_pair(c, B, min_bins=1, mode='exact'):
    """(left, right) bin intervals of the complementary step that follows width ``c``.

    ``exact`` (paper, BCNet V1 code): the complement c' = B - c, with left [0, B - c) and right [c, B). Its two
    paths cover exactly the bins c's paths missed, so every bin is trained twice per pair. Returns ``None``
    when c' = 0 (c = B with min_bins = 1): there is no zero-width layer.
    ``official_v2`` (edgenn BCNetSampler): left [min(c+1, B-1), B), right [0, max(1, B-c-1)), i.e. B - c - 1
    bins: one bin per layer is skipped in every complementary step (kept for compatibility only).
    """
    if mode == 'exact':
        if B - c < 1:
            return None
        return [0, B - c], [c, B]
    if mode == 'official_v2':
        return [min(c + 1, B - 1), B], [0, max(1, B - c - 1)]
    raise ValueError(f"complement must be one of {COMPLEMENT_MODES}, got {mode!r}")


class BCNetSampler:
    """Draws c uniformly and independently per layer; returns its left and right intervals.

    With ``complementary=True`` the call after a fresh draw returns the complementary pair of that draw
    (``complement`` selects the exact or the official V2 form). With the exact form a layer at c = B has no
    complement: ``zero_complement='skip'`` (default) skips the complementary step and draws a fresh c;
    ``'redraw'`` keeps the complement of the other layers and draws a fresh width for those layers only.

    Every process of a distributed run must draw the same widths: seed ``rng`` identically on all ranks.
    """

    def __init__(self, channel_bins, min_channel_bins=1, complementary=True, complement='exact', rng=None,
                 zero_complement='skip'):
        if complement not in COMPLEMENT_MODES:
            raise ValueError(f"complement must be one of {COMPLEMENT_MODES}, got {complement!r}")
        if zero_complement not in ZERO_COMPLEMENT:
            raise ValueError(f"zero_complement must be one of {ZERO_COMPLEMENT}, got {zero_complement!r}")
        width_range(channel_bins, min_channel_bins)
        self.channel_bins, self.min_channel_bins = channel_bins, min_channel_bins
        self.complementary, self.complement, self.zero_complement = complementary, complement, zero_complement
        self.rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        self._pending = None          # the complementary pair waiting for the next call
        self._bounds = {}
        self.counts = {'fresh': 0, 'complementary': 0, 'skipped': 0}

    def _draw(self, choice_list):
        """One width per layer, uniform over that layer's ``width_range``."""
        key = tuple(tuple(x) for x in choice_list)
        bounds = self._bounds.get(key)
        if bounds is None:
            r = np.array([width_range(int(mx), int(mn)) for mn, mx in choice_list])
            bounds = self._bounds[key] = (r[:, 0], r[:, 1] + 1)
        return self.rng.integers(*bounds).tolist()

    def gen_subnet(self, choice_list):
        """(subnet_left, subnet_right) for the next training step; ``choice_list`` is [[min, max]] per layer."""
        if self._pending is not None:
            pair, self._pending = self._pending, None
            self.counts['complementary'] += 1
            return pair
        widths = self._draw(choice_list)
        left = [[0, c] for c in widths]
        right = [[int(mx) - c, int(mx)] for c, (_, mx) in zip(widths, choice_list)]
        self.counts['fresh'] += 1
        if self.complementary:
            self._pending = self._complement(widths, choice_list)
            if self._pending is None:
                self.counts['skipped'] += 1
        return left, right

    def _complement(self, widths, choice_list):
        comp_l, comp_r = [], []
        for i, (c, (mn, mx)) in enumerate(zip(widths, choice_list)):
            pair = complementary_pair(c, int(mx), int(mn), self.complement)
            if pair is None:
                if self.zero_complement == 'skip':
                    return None
                c_new = self._draw([choice_list[i]])[0]
                pair = ([0, c_new], [int(mx) - c_new, int(mx)])
            comp_l.append(pair[0])
            comp_r.append(pair[1])
        return comp_l, comp_r

    def state_dict(self):
        return {'rng': self.rng.bit_generator.state, 'pending': self._pending, 'counts': dict(self.counts)}

    def load_state_dict(self, state):
        self.rng.bit_generator.state = state['rng']
        self._pending = state['pending']
        self.counts = dict(state['counts'])
