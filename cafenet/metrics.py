"""Rank correlations between supernet scores and benchmark accuracies (numpy only).

* ``pearson(x, y)``: linear correlation.
* ``spearman(x, y)``: Pearson correlation of the ranks, tied values sharing their average rank.
* ``kendall_tau_b(x, y)``: tau-b = (n_c - n_d) / sqrt((n0 - n1)(n0 - n2)), with n0 = n(n-1)/2 and n1, n2 the
  pairs tied in x, in y; computed in O(n log n) (Knight's algorithm: sort by x then y, count the discordant
  pairs as the inversions of y, with a Fenwick tree).
"""
import numpy as np

__all__ = ['pearson', 'spearman', 'kendall_tau_b', 'rankdata']


def _pair(x, y):
    x, y = np.asarray(x, dtype=np.float64).ravel(), np.asarray(y, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f'x and y must have the same length, got {x.size} and {y.size}')
    if x.size < 2:
        raise ValueError('a correlation needs at least 2 points')
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError('x and y must be finite')
    return x, y


def pearson(x, y):
    x, y = _pair(x, y)
    xc, yc = x - x.mean(), y - y.mean()
    den = np.sqrt((xc * xc).sum() * (yc * yc).sum())
    return float((xc * yc).sum() / den) if den > 0 else float('nan')


def rankdata(a):
    """1-based ranks; tied values get the average of the ranks they span."""
    a = np.asarray(a, dtype=np.float64).ravel()
    order = np.argsort(a, kind='mergesort')
    sa = a[order]
    starts = np.r_[True, sa[1:] != sa[:-1]]
    group = np.cumsum(starts) - 1
    first = np.flatnonzero(starts)
    last = np.r_[first[1:], a.size] - 1
    avg = (first + last) / 2.0 + 1.0
    ranks = np.empty(a.size)
    ranks[order] = avg[group]
    return ranks


def spearman(x, y):
    x, y = _pair(x, y)
    return pearson(rankdata(x), rankdata(y))


def _tied_pairs(sorted_vals):
    """Number of pairs with equal values in an already sorted array."""
    starts = np.r_[True, sorted_vals[1:] != sorted_vals[:-1]]
    counts = np.diff(np.r_[np.flatnonzero(starts), sorted_vals.size])
    return int((counts * (counts - 1) // 2).sum())


def _joint_tied_pairs(xs, ys):
    """Pairs tied in both x and y, for x-then-y sorted arrays."""
    starts = np.r_[True, (xs[1:] != xs[:-1]) | (ys[1:] != ys[:-1])]
    counts = np.diff(np.r_[np.flatnonzero(starts), xs.size])
    return int((counts * (counts - 1) // 2).sum())


def _inversions(values):
    """Pairs i < j with values[i] > values[j] (Fenwick tree over dense ranks)."""
    dense = np.unique(values, return_inverse=True)[1].ravel() + 1
    size = int(dense.max())
    tree = [0] * (size + 1)
    inv = 0
    for i, v in enumerate(dense.tolist()):
        s, k = 0, v          # how many earlier values are <= v
        while k > 0:
            s += tree[k]
            k -= k & -k
        inv += i - s
        k = v
        while k <= size:
            tree[k] += 1
            k += k & -k
    return inv


def kendall_tau_b(x, y):
    x, y = _pair(x, y)
    n = x.size
    order = np.lexsort((y, x))            # by x, ties by y
    xs, ys = x[order], y[order]
    n0 = n * (n - 1) // 2
    n1 = _tied_pairs(xs)                  # tied in x
    n3 = _joint_tied_pairs(xs, ys)        # tied in both
    n2 = _tied_pairs(np.sort(ys, kind='mergesort'))
    discordant = _inversions(ys)          # within x-ties ys is sorted, so they add no inversions
    concordant_minus_discordant = n0 - n1 - n2 + n3 - 2 * discordant
    den = np.sqrt(float(n0 - n1) * float(n0 - n2))
    return float(concordant_minus_discordant / den) if den > 0 else float('nan')
