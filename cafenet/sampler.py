"""``CafeNetSampler``: the random choices of one supernet training step.

1. a width vector c: every slot's width uniformly from [1, n_l] units, independently (as in BCNet);
2. K placements s^(1..K): every slot picks its unit set uniformly from S(c_l) (``sharing.sample_candidate``).

Identical placements among the K draws are kept once (they would score the same). Every process of a
distributed run must draw the same choices: seed ``rng`` identically on all ranks.
"""
import numpy as np

from sharing import sample_candidate

__all__ = ['CafeNetSampler']


class CafeNetSampler:
    def __init__(self, num_units, r=1, rng=None):
        self.num_units = [int(n) for n in num_units]
        if any(n < 1 for n in self.num_units):
            raise ValueError(f'every slot needs >= 1 unit, got {self.num_units}')
        if int(r) < 0:
            raise ValueError(f'offset r must be >= 0, got {r}')
        self.r = int(r)
        self.rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)

    def sample_widths(self):
        return [int(w) for w in self.rng.integers(1, np.array(self.num_units) + 1)]

    def sample_placement(self, widths):
        return tuple(sample_candidate(n, w, self.r, self.rng) for n, w in zip(self.num_units, widths))

    def sample_placements(self, widths, k):
        """``k`` uniform placements of ``widths``, duplicates removed (order of first draw kept)."""
        out = []
        for _ in range(int(k)):
            p = self.sample_placement(widths)
            if p not in out:
                out.append(p)
        return out

    def state_dict(self):
        return {'rng': self.rng.bit_generator.state}

    def load_state_dict(self, state):
        self.rng.bit_generator.state = state['rng']
