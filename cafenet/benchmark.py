"""Channel-Bench-Macro lookups (BCNetV2, arXiv 2203.13714).

Each JSON file maps a 7-digit arch (``'1234123'``: 25/50/75/100 % of each slot's full width) to ``acc`` (3 runs,
best epoch of 60 on CIFAR-10), ``mean``, ``std`` (ddof=1), ``params`` and ``flops`` (conv + FC MACs at 32x32).
The files carry no licence: they are read from a configured path, never copied.
"""
import json
import math
import os

import numpy as np

from models.cbm import SPACES, arch_channels, cbm_counts, parse_arch

__all__ = ['ChannelBenchMacro', 'arch_key', 'expected_best', 'load_supernet_scores']


def expected_best(values, n):
    """E[max] of ``n`` values drawn uniformly without replacement from ``values`` (exact order statistics):
    P(max = k-th smallest) = C(k-1, n-1) / C(M, n)."""
    a = np.sort(np.asarray(values, dtype=np.float64))
    M = a.size
    if not 1 <= n <= M:
        raise ValueError(f'n must be in [1, {M}], got {n}')
    k = np.arange(n, M + 1)
    logp = np.array([math.lgamma(kk) - math.lgamma(n) - math.lgamma(kk - n + 1) for kk in k])
    logp -= math.lgamma(M + 1) - math.lgamma(n + 1) - math.lgamma(M - n + 1)
    return float((np.exp(logp) * a[k - 1]).sum())


def arch_key(arch):
    """[1, 2, 3, 4, 1, 2, 3] or '1234123' -> '1234123'."""
    return ''.join(str(a) for a in parse_arch(arch))


class ChannelBenchMacro:
    """The table of one space; ``space`` is inferred from the params of '1111111' when not given."""

    def __init__(self, json_path, space=None):
        if not os.path.isfile(json_path):
            raise FileNotFoundError(f"Channel-Bench-Macro file not found: '{json_path}' (expected the JSON "
                                    f"Results_MobileNet.json / Results_ResNet.json of xiusu/Channel-Bench-Macro)")
        try:
            with open(json_path) as f:
                table = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"'{json_path}' is not a JSON file: {e}") from None
        if not isinstance(table, dict) or '1111111' not in table or 'mean' not in table['1111111']:
            raise ValueError(f"'{json_path}' is not a Channel-Bench-Macro table (no '1111111' entry with 'mean')")
        self.path, self.table = json_path, table
        if space is None:
            space = next((s for s in SPACES if cbm_counts('1111111', s)[0] == table['1111111']['params']), None)
            if space is None:
                raise ValueError(f"'{json_path}': the params of '1111111' match neither space")
        elif space not in SPACES:
            raise ValueError(f"unknown Channel-Bench-Macro space {space!r} (choose from {sorted(SPACES)})")
        self.space = space
        self.keys = sorted(table)
        self.means = np.array([table[k]['mean'] for k in self.keys], dtype=np.float64)
        order = np.argsort(-self.means, kind='mergesort')
        self._rank = {}
        sorted_means = self.means[order]
        for k, m in zip(self.keys, self.means):
            # 1 + number of archs strictly better (ties share the best rank)
            self._rank[k] = int(np.searchsorted(-sorted_means, -m, side='left')) + 1

    def __len__(self):
        return len(self.table)

    def query(self, arch):
        return self.table[arch_key(arch)]

    def mean(self, arch):
        return float(self.query(arch)['mean'])

    def rank(self, arch):
        """1-based rank of ``arch`` by mean accuracy among all archs of the space (1 = best)."""
        return self._rank[arch_key(arch)]

    def widths(self, arch, space=None, width_mult=1.0):
        """Channels c_0..c_6 of ``arch`` in ``space`` (default: this table's space)."""
        return arch_channels(arch, space or self.space, width_mult)

    def best(self, flops_limit=None, flops_min=0):
        """(arch, mean) of the best arch, optionally with flops in [flops_min, flops_limit]."""
        cands = [(self.table[k]['mean'], k) for k in self.keys
                 if flops_limit is None or flops_min <= self.table[k]['flops'] <= flops_limit]
        if not cands:
            return None, float('nan')
        m, k = max(cands)
        return k, float(m)

    def expected_best_of_random(self, n):
        """E[max mean accuracy] of ``n`` archs drawn uniformly without replacement."""
        return expected_best(self.means, n)


def load_supernet_scores(path):
    """Per-arch supernet scores: the official ``{"Result": [{"subnet": 1111111, "score": ..}, ..]}`` format
    (``example/classification/json_results``) or a plain ``{"1111111": score}`` dict. Returns {key: score}."""
    with open(path) as f:
        data = json.load(f)
    if isinstance(data, dict) and 'Result' in data:
        return {arch_key(str(r['subnet'])): float(r['score']) for r in data['Result']}
    if isinstance(data, dict):
        return {arch_key(k): float(v) for k, v in data.items()}
    raise ValueError(f"'{path}': unknown score file format")
