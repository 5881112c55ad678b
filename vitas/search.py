"""ViTAS search: the identity-probability walk and the evolutionary sampler.

``prop_search`` tunes the probability of sampling the identity op so that random subnets meet a
FLOPs budget.  ``EvolutionSampler`` re-implements the official NSGA-Net engine (pymoo 0.3.0
NSGA-II, used single-objective): binary tournament by domination then crowding, two-point
crossover, integer polynomial mutation (eta 3), duplicate elimination, rank-and-crowding
survival, results cached per genome.
"""
import math
import random

import numpy as np

from flops import count_flops
from subnet import (CHANNEL_PERCENT, decode_genome, encode_genome, generate_subnet,
                    resolve_space, shift_identity)


def prop_search(supernet_cfg, flops_min, flops_constraint, ps_num=1000, step=0.01, start=0.5,
                rng=None, channel_percent=CHANNEL_PERCENT, max_steps=1000, log=None):
    """Official ``prop_search``: starting at ``start``, draw ``ps_num`` random subnets, average
    their FLOPs; above ``flops_constraint`` -> id_prop += step, below ``flops_min`` -> -= step,
    else stop.  Raises ``RuntimeError`` when id_prop leaves (0, 1)."""
    space = resolve_space(supernet_cfg)
    if not space['id_op']:
        raise ValueError('prop_search needs a search space with the identity op')
    rng = rng if rng is not None else random.Random(0)
    id_prop = start
    for _ in range(max_steps):
        mean = sum(count_flops(generate_subnet(space['depth'], id_prop, channel_percent, rng,
                                               len(space['heads']), len(space['patch_sizes'])),
                               space) for _ in range(ps_num)) / ps_num
        if mean > flops_constraint:
            new = id_prop + step
        elif mean < flops_min:
            new = id_prop - step
        else:
            if log:
                log(f'prop_search: id_prop {id_prop:.2f} gives mean FLOPs {mean / 1e6:.2f}M '
                    f'within [{flops_min / 1e6:.2f}M, {flops_constraint / 1e6:.2f}M]')
            return id_prop
        if log:
            log(f'prop_search: id_prop {id_prop:.2f} mean FLOPs {mean / 1e6:.2f}M -> {new:.2f}')
        id_prop = round(new, 10)
        if id_prop >= 1 or id_prop <= 0:
            raise RuntimeError(f'prop_search left (0, 1): id_prop {id_prop}; the FLOPs window '
                               f'[{flops_min}, {flops_constraint}] is out of reach')
    raise RuntimeError(f'prop_search did not settle in {max_steps} steps')


# ----------------------------------------------------------------------------- NSGA-II pieces
def _rank_and_crowding(F):
    """Single-objective non-dominated rank (dense rank of F) and pymoo's crowding distance:
    a front of equal values gets +inf when it has <= 2 members, else 0."""
    ranks = np.empty(len(F), dtype=int)
    crowd = np.empty(len(F))
    for r, v in enumerate(np.unique(F)):
        idx = np.flatnonzero(F == v)
        ranks[idx] = r
        crowd[idx] = np.inf if len(idx) <= 2 else 0.0
    return ranks, crowd


def _survive(F, n, rs):
    """Rank-and-crowding survival: fill by front, the last front by descending crowding
    (random order among ties)."""
    ranks, crowd = _rank_and_crowding(F)
    keep = []
    for r in range(ranks.max() + 1):
        front = np.flatnonzero(ranks == r)
        if len(keep) + len(front) <= n:
            keep.extend(front.tolist())
        else:
            perm = rs.permutation(front)
            order = perm[np.argsort(-crowd[perm], kind='stable')]
            keep.extend(order[:n - len(keep)].tolist())
        if len(keep) >= n:
            break
    return np.array(keep)


def _tournament(F, crowd, n_select, rs):
    """Binary tournament (pressure 2): lower F wins; equal F -> larger crowding; tie -> random."""
    n = len(F)
    need = n_select * 2
    perms = np.concatenate([rs.permutation(n) for _ in range(math.ceil(need / n))])[:need]
    a, b = perms[0::2], perms[1::2]
    winners = []
    for i, j in zip(a, b):
        if F[i] != F[j]:
            winners.append(i if F[i] < F[j] else j)
        elif crowd[i] != crowd[j]:
            winners.append(i if crowd[i] > crowd[j] else j)
        else:
            winners.append(i if rs.random() < 0.5 else j)
    return np.array(winners)


def two_point_crossover(p1, p2, rs, prob=0.9):
    """pymoo ``PointCrossover(n_points=2)``: swap genes ``[c1, c2)`` with probability ``prob``."""
    o1, o2 = p1.copy(), p2.copy()
    if rs.random() < prob:
        c1, c2 = np.sort(rs.permutation(len(p1) - 1)[:2] + 1)
        o1[c1:c2], o2[c1:c2] = p2[c1:c2], p1[c1:c2]
    return o1, o2


def int_polynomial_mutation(x, xl, xu, rs, eta=3, prob=None):
    """Deb's polynomial mutation on the float value, rounded back to int (pymoo ``int_pm``);
    each gene mutates with probability ``prob`` (default 1 / n_var).  Genes with
    ``xl == xu`` are fixed."""
    prob = 1.0 / len(x) if prob is None else prob
    y = x.astype(float)
    for i in np.flatnonzero(rs.random(len(x)) < prob):
        lo, hi = float(xl[i]), float(xu[i])
        if hi <= lo:
            continue
        d1, d2 = (y[i] - lo) / (hi - lo), (hi - y[i]) / (hi - lo)
        r, p = rs.random(), 1.0 / (eta + 1.0)
        if r <= 0.5:
            val = 2 * r + (1 - 2 * r) * (1 - d1) ** (eta + 1)
            dq = val ** p - 1
        else:
            val = 2 * (1 - r) + 2 * (r - 0.5) * (1 - d2) ** (eta + 1)
            dq = 1 - val ** p
        y[i] = min(max(y[i] + dq * (hi - lo), lo), hi)
    return np.rint(y).astype(int)


class EvolutionSampler:
    """Official ``EvolutionSampler`` (NSGA-II engine, single objective ``100 - score``).

    ``evaluator(subnet, side) -> top-1 (%)`` scores a subnet with the supernet weights; the score
    of a genome is the mean over ``supernet.score_sides()`` (left and right for BCNet).
    Out-of-budget genomes get ``score = 5 - (F - F_max) / F_max`` without evaluation.
    """

    def __init__(self, supernet, evaluator, pop_size=50, n_gens=40, flops_constraint=None,
                 flops_min=0, channel_percent=CHANNEL_PERCENT, side_scheme='BCNet',
                 crossover='two_point', mutation_eta=3, id_prop=0.5, seed=0,
                 identity_shift=False, crossover_prob=0.9, max_init_tries=100000, log=None):
        if flops_constraint is None:
            raise ValueError('EvolutionSampler needs flops_constraint')
        if crossover != 'two_point':
            raise ValueError(f"only crossover='two_point' is implemented, got {crossover!r}")
        self.supernet, self.evaluator = supernet, evaluator
        self.space = resolve_space(supernet)
        self.pop_size, self.n_gens = pop_size, n_gens
        self.flops_constraint, self.flops_min = flops_constraint, flops_min
        self.channel_percent = tuple(channel_percent)
        self.side_scheme, self.eta, self.id_prop = side_scheme, mutation_eta, id_prop
        self.identity_shift, self.crossover_prob = identity_shift, crossover_prob
        self.max_init_tries, self.log = max_init_tries, log or (lambda msg: None)
        self.sides = {'BCNet': ['left', 'right'], 'AutoSlim': ['left'],
                      'cyclic': ['cyclic']}[side_scheme]
        depth, nh = self.space['depth'], len(self.space['heads'])
        n_ops = nh + (1 if self.space['id_op'] else 0)
        nc = len(self.channel_percent) - 1
        self.xl = np.zeros(depth + 3 + 1 + 2 * depth, dtype=int)
        self.xu = np.array([len(self.space['patch_sizes']) - 1] + [n_ops - 1] * depth + [0, 0]
                           + [nc] * (1 + 2 * depth))
        self.rs = np.random.RandomState(seed)
        self.py_rng = random.Random(seed)
        self.cache = {}              # genome tuple -> (score, flops)
        self.pop = self.F = None
        self.gen = 0
        self.history = []

    # ------------------------------------------------------------------ genomes
    def decode(self, genome):
        subnet = decode_genome(genome, self.space['depth'], self.channel_percent,
                               len(self.space['heads']))
        return shift_identity(subnet) if self.identity_shift else subnet

    def genome_of(self, subnet):
        return np.array(encode_genome(subnet, self.channel_percent, len(self.space['heads'])))

    def flops(self, genome):
        return count_flops(self.decode(genome), self.space)

    def in_budget(self, f):
        return self.flops_min <= f <= self.flops_constraint

    def score(self, genome):
        """Cached score of ``genome`` (evaluated only when within the FLOPs budget)."""
        key = tuple(int(g) for g in genome)
        if key not in self.cache:
            f = self.flops(genome)
            if not self.in_budget(f):
                s = 5 - (f - self.flops_constraint) / self.flops_constraint
            else:
                sub = self.decode(genome)
                s = float(np.mean([self.evaluator(sub, side) for side in self.sides]))
            self.cache[key] = (s, f)
            self.log(f'evolution: eval #{len(self.cache)} score {s:.2f} FLOPs {f / 1e6:.2f}M')
        return self.cache[key][0]

    def init_population(self):
        """``pop_size`` random subnets (sampled with the searched id_prop) inside the budget."""
        pop = []
        for _ in range(self.max_init_tries):
            sub = generate_subnet(self.space['depth'], self.id_prop if self.space['id_op'] else 0.,
                                  self.channel_percent, self.py_rng, len(self.space['heads']),
                                  len(self.space['patch_sizes']))
            g = self.genome_of(sub)
            if self.in_budget(self.flops(g)):
                pop.append(g)
                if len(pop) == self.pop_size:
                    return np.stack(pop)
        raise RuntimeError(f'found only {len(pop)} of {self.pop_size} random subnets inside the '
                           f'FLOPs window [{self.flops_min}, {self.flops_constraint}] in '
                           f'{self.max_init_tries} draws')

    # ------------------------------------------------------------------ NSGA-II loop
    def _mating(self, n_off):
        _, crowd = _rank_and_crowding(self.F)
        seen = {tuple(g) for g in self.pop}
        off = []
        for _ in range(100):                         # pymoo's n_max_iterations
            parents = _tournament(self.F, crowd, math.ceil((n_off - len(off)) / 2) * 2, self.rs)
            for i in range(0, len(parents), 2):
                for child in two_point_crossover(self.pop[parents[i]], self.pop[parents[i + 1]],
                                                 self.rs, self.crossover_prob):
                    child = int_polynomial_mutation(child, self.xl, self.xu, self.rs, self.eta)
                    if tuple(child) not in seen:     # duplicates of pop and of offspring
                        seen.add(tuple(child))
                        off.append(child)
            if len(off) >= n_off:
                break
        return np.stack(off[:n_off]) if off else np.empty((0, len(self.xu)), dtype=int)

    def _record(self):
        best = int(np.argmin(self.F))
        self.history.append({'gen': self.gen, 'best_score': float(100 - self.F[best]),
                             'mean_score': float(np.mean(100 - self.F)),
                             'n_evals': len(self.cache),
                             'best_net_id': ' '.join(str(int(g)) for g in self.pop[best])})

    def step(self):
        """Initialise (generation 1) or run one more generation; returns the generation count."""
        if self.pop is None:
            self.pop = self.init_population()
            self.F = np.array([100 - self.score(g) for g in self.pop])
            keep = _survive(self.F, self.pop_size, self.rs)
            self.pop, self.F = self.pop[keep], self.F[keep]
        else:
            off = self._mating(self.pop_size)
            off_F = np.array([100 - self.score(g) for g in off])
            pop, F = np.concatenate([self.pop, off]), np.concatenate([self.F, off_F])
            keep = _survive(F, self.pop_size, self.rs)
            self.pop, self.F = pop[keep], F[keep]
        self.gen += 1
        self._record()
        return self.gen

    def done(self):
        return self.gen >= self.n_gens

    def best(self):
        """(subnet, score, flops, genome) of the best genome seen (over the whole cache)."""
        key, (s, f) = max(self.cache.items(), key=lambda kv: kv[1][0])
        return self.decode(key), s, f, np.array(key)

    def sample(self, callback=None):
        """Run the search to ``n_gens`` generations (generation 1 = the initial population, as in
        pymoo).  Returns ``(best_subnet, history)``."""
        while not self.done():
            self.step()
            if callback is not None:
                callback(self)
        return self.best()[0], self.history

    # ------------------------------------------------------------------ resume
    def state_dict(self):
        return {'pop': None if self.pop is None else self.pop.tolist(),
                'F': None if self.F is None else self.F.tolist(), 'gen': self.gen,
                'cache': [[list(k), v[0], v[1]] for k, v in self.cache.items()],
                'history': list(self.history), 'rs': self.rs.get_state(),
                'py_rng': self.py_rng.getstate(), 'id_prop': self.id_prop}

    def load_state_dict(self, state):
        self.pop = None if state['pop'] is None else np.array(state['pop'], dtype=int)
        self.F = None if state['F'] is None else np.array(state['F'])
        self.gen, self.history = state['gen'], list(state['history'])
        self.cache = {tuple(k): (s, f) for k, s, f in state['cache']}
        self.rs.set_state(state['rs'])
        self.py_rng.setstate(state['py_rng'])
        self.id_prop = state['id_prop']
