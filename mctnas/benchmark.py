"""NAS-Bench-Macro lookup table (CIFAR-10, 3^8 = 6561 keys, one digit per layer: 0 id, 1 MB3_K3, 2 MB6_K5).

Ranks are ranks of the value with ties (1 + number of entries with a strictly higher ``mean_acc``), since
equivalent architectures (identities moved inside a stage) share one entry.
"""
import bisect
import json
import os

from models.nas_bench_macro import NUM_LAYERS, parse_arch, real_arch

FIELDS = ('test_acc', 'mean_acc', 'std', 'params', 'flops')


def arch_key(arch):
    return ''.join(map(str, parse_arch(arch)))


class NASBenchMacro:
    def __init__(self, json_path):
        self.path = os.fspath(json_path)
        if not os.path.isfile(self.path):
            raise FileNotFoundError(f'NAS-Bench-Macro file not found: {self.path} (expected the JSON of '
                                    f'xiusu/NAS-Bench-Macro, data/nas-bench-macro_cifar10.json)')
        try:
            with open(self.path) as f:
                data = json.load(f)
        except (OSError, ValueError) as e:
            raise ValueError(f'cannot read NAS-Bench-Macro JSON {self.path}: {e}') from e
        if not isinstance(data, dict) or len(data) != 3 ** NUM_LAYERS:
            raise ValueError(f'{self.path}: expected a dict of {3 ** NUM_LAYERS} architectures')
        for k, v in data.items():
            if len(k) != NUM_LAYERS or not isinstance(v, dict) or any(f not in v for f in FIELDS):
                raise ValueError(f'{self.path}: malformed entry {k!r}; each value needs fields {FIELDS}')
        self.data = data
        self._sorted = sorted(v['mean_acc'] for v in data.values())

    def __len__(self):
        return len(self.data)

    def keys(self):
        return list(self.data)

    def query(self, arch):
        return self.data[arch_key(arch)]

    def acc(self, arch):
        return self.query(arch)['mean_acc']

    @staticmethod
    def real_arch(arch):
        return real_arch(arch)

    def rank(self, arch):
        """1 + number of architectures with a strictly higher mean accuracy."""
        acc = self.acc(arch)
        return len(self._sorted) - bisect.bisect_right(self._sorted, acc) + 1

    def best(self):
        k = max(self.data, key=lambda k: (self.data[k]['mean_acc'], k))
        return k, self.data[k]['mean_acc']
