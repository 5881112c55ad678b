"""Locally free weight sharing: the candidate channel sets S(c) of a width (CafeNet, Fig. 1).

A layer has ``n`` units (bins of channels, see ``bins.py``). Under the *fixed* pattern (AutoSlim, BCNet's left
path) width c uses units [0, c). Under the *locally free* pattern width c is made of

* base units [0, b) with b = max(c - r, 0), always used, and
* f = c - b = min(r, c) free units, anywhere in the free zone Z = [b, min(c + r, n)),

so S(c) = { [0, b) U T : T subset of Z, |T| = f }. Every member has exactly c units; |S(c)| = C(2r, r) for
interior widths (2 for r = 1: the c-th or the (c+1)-th unit), |S(n)| = 1, and r = 0 is the fixed pattern.
The index rule is the card's reading of Fig. 1 (a reconstruction: the paper's appendix was not available).
"""
import itertools
import math

import numpy as np
import torch

__all__ = ['free_zone', 'candidate_sets', 'num_candidates', 'sample_candidate', 'is_candidate',
           'units_to_channels']


def free_zone(n_units, width, r):
    """(b, zone_start, zone_stop, f): base [0, b), zone [zone_start, zone_stop), f free units."""
    n, c, r = int(n_units), int(width), int(r)
    if n < 1:
        raise ValueError(f'a layer needs at least one unit, got {n}')
    if not 1 <= c <= n:
        raise ValueError(f'width {c} outside [1, {n}]')
    if r < 0:
        raise ValueError(f'offset r must be >= 0, got {r}')
    b = max(c - r, 0)
    return b, b, min(c + r, n), c - b


def candidate_sets(n_units, width, r):
    """S(c) as a list of sorted unit tuples (lexicographic order)."""
    b, z0, z1, f = free_zone(n_units, width, r)
    base = tuple(range(b))
    return [base + t for t in itertools.combinations(range(z0, z1), f)]


def num_candidates(n_units, width, r):
    b, z0, z1, f = free_zone(n_units, width, r)
    return math.comb(z1 - z0, f)


def sample_candidate(n_units, width, r, rng):
    """A uniform member of S(c) (``rng``: numpy Generator), without enumerating S(c)."""
    b, z0, z1, f = free_zone(n_units, width, r)
    free = sorted(int(u) for u in rng.choice(np.arange(z0, z1), size=f, replace=False)) if f else []
    return tuple(range(b)) + tuple(free)


def is_candidate(units, n_units, width, r):
    """Whether ``units`` belongs to S(c): c distinct units, the base included, the rest in the zone."""
    b, z0, z1, f = free_zone(n_units, width, r)
    u = sorted(int(x) for x in units)
    return len(u) == len(set(u)) == int(width) and u[:b] == list(range(b)) and all(z0 <= x < z1 for x in u[b:])


def units_to_channels(unit_ids, bin_size):
    """LongTensor of the channels of ``unit_ids`` (unit k = channels [k * bin_size, (k + 1) * bin_size))."""
    bin_size = int(bin_size)
    if bin_size < 1:
        raise ValueError(f'bin size must be >= 1, got {bin_size}')
    u = torch.as_tensor([int(x) for x in unit_ids], dtype=torch.long)
    if u.numel() == 0:
        raise ValueError('a channel set needs at least one unit')
    return (u[:, None] * bin_size + torch.arange(bin_size)).reshape(-1)
