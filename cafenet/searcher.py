"""Evolutionary width search of CafeNet under a FLOPs budget (card: mirrors BCNet's searcher).

A candidate is a width vector c (units per slot). Its score is the best over its evaluation placements,

    score(c) = max_{s in P(c)} evaluator(c, s),

where P(c) holds all placements of c when there are at most ``eval_placements`` of them, else
``eval_placements`` distinct uniform ones (``placements_fn``; ``None`` for an evaluator that ignores the
placement, such as the benchmark table). Evolution (BCNet's defaults): a first population of
``population_num`` uniform candidates, then per generation the ``top_k_num`` best so far breed
``mutation_num`` mutants (every gene redrawn uniformly with ``mutation_prob``) and ``crossover_num`` uniform
crossovers; a candidate is legal when unseen and its FLOPs (at the nominal widths: every placement has the
same FLOPs) lie in [flops_min_ratio * flops_limit, flops_limit]. All randomness comes from ``seed``: every
process of a distributed run passes the same seed (the evaluator all-reduces its scores).
"""
import numpy as np

__all__ = ['CafeNetSearcher']


class CafeNetSearcher:
    def __init__(self, max_epoch=40, population_num=50, top_k_num=10, mutation_num=25, mutation_prob=0.1,
                 crossover_num=25, flops_limit=None, eval_placements=4, flops_min_ratio=0.8, seed=0,
                 max_tries=10000):
        if int(eval_placements) < 1:
            raise ValueError(f'eval_placements must be >= 1, got {eval_placements}')
        self.max_epoch, self.population_num, self.top_k_num = int(max_epoch), int(population_num), int(top_k_num)
        self.mutation_num, self.mutation_prob, self.crossover_num = int(mutation_num), mutation_prob, int(crossover_num)
        self.flops_limit, self.eval_placements = flops_limit, int(eval_placements)
        self.flops_min_ratio, self.max_tries, self.seed = flops_min_ratio, int(max_tries), seed
        self.rng = np.random.default_rng(seed)
        self.epoch = 0
        self.population = []
        self.top_k = []
        self.scores = {}        # candidate -> best score over its placements
        self.best_placement = {}
        self.seen = set()
        self.history = []       # per generation: (epoch, best candidate, best score, evaluated so far)

    # ------------------------------------------------------------------ candidates
    def _genes(self, num_units, n=None):
        hi = np.asarray(num_units) + 1
        shape = (len(num_units),) if n is None else (n, len(num_units))
        return self.rng.integers(1, hi, size=shape)

    def is_legal(self, cand, flops_fn):
        """Unseen and, with a limit, FLOPs in [flops_min_ratio * limit, limit]. Marks it seen."""
        if cand in self.seen:
            return False
        self.seen.add(cand)
        if self.flops_limit:
            f = flops_fn(list(cand))
            if f > self.flops_limit or f < self.flops_min_ratio * self.flops_limit:
                return False
        return True

    def _fill(self, population, num_units, flops_fn, target, chunk=256):
        tries = 0
        while len(population) < target and tries < self.max_tries:
            for row in self._genes(num_units, min(chunk, self.max_tries - tries)).tolist():
                tries += 1
                cand = tuple(int(g) for g in row)
                if self.is_legal(cand, flops_fn):
                    population.append(cand)
                    if len(population) >= target:
                        break
        return population

    def _parent(self):
        return self.top_k[int(self.rng.integers(len(self.top_k)))]

    def _mutate(self, num_units, flops_fn):
        out, tries = [], self.mutation_num * 10
        while len(out) < self.mutation_num and tries > 0:
            tries -= 1
            parent = np.array(self._parent())
            mask = self.rng.random(parent.size) < self.mutation_prob
            cand = tuple(int(g) for g in np.where(mask, self._genes(num_units), parent))
            if self.is_legal(cand, flops_fn):
                out.append(cand)
        return out

    def _crossover(self, flops_fn):
        out, tries = [], self.crossover_num * 10
        while len(out) < self.crossover_num and tries > 0:
            tries -= 1
            c1, c2 = self._parent(), self._parent()
            pick = self.rng.integers(2, size=len(c1))
            cand = tuple(int(a if k == 0 else b) for a, b, k in zip(c1, c2, pick))
            if self.is_legal(cand, flops_fn):
                out.append(cand)
        return out

    # ------------------------------------------------------------------ scoring
    def score(self, cand, evaluator, placements_fn=None):
        """max over the evaluation placements of ``evaluator(widths, placement)``; records the best one."""
        widths = list(cand)
        if placements_fn is None:
            self.best_placement[cand] = None
            return float(evaluator(widths, None))
        best, best_p = -float('inf'), None
        for p in placements_fn(widths, self.eval_placements, self.rng):
            s = float(evaluator(widths, p))
            if s > best:
                best, best_p = s, p
        self.best_placement[cand] = best_p
        return best

    def search(self, num_units, evaluator, flops_fn, placements_fn=None, callback=None):
        """Evolve until ``max_epoch`` generations; resumable (state in ``state_dict``). Returns ``result()``."""
        num_units = [int(n) for n in num_units]
        if self.epoch == 0 and not self.population and not self.scores:
            self.population = self._fill([], num_units, flops_fn, self.population_num)
        population = list(self.population)
        while self.epoch < self.max_epoch:
            population = self._fill(population, num_units, flops_fn, self.population_num)
            if not population and not self.top_k:
                break       # the FLOPs window holds no candidate
            for cand in population:
                if cand not in self.scores:
                    self.scores[cand] = self.score(cand, evaluator, placements_fn)
            pool = {c: None for c in self.top_k + population}
            self.top_k = sorted(pool, key=lambda c: self.scores[c], reverse=True)[:self.top_k_num]
            population = self._mutate(num_units, flops_fn) + self._crossover(flops_fn)
            self.population = population
            self.epoch += 1
            best = self.top_k[0]
            self.history.append((self.epoch, best, self.scores[best], len(self.scores)))
            if callback is not None:
                callback(self)
        return self.result()

    def result(self):
        if not self.top_k:
            return {'best': None, 'score': float('nan'), 'placement': None, 'top_k': [],
                    'evaluated': len(self.scores), 'epochs': self.epoch}
        b = self.top_k[0]
        p = self.best_placement.get(b)
        return {'best': list(b), 'score': self.scores[b], 'placement': None if p is None else [list(u) for u in p],
                'top_k': [(list(c), self.scores[c]) for c in self.top_k], 'evaluated': len(self.scores),
                'epochs': self.epoch}

    # ------------------------------------------------------------------ resume
    def state_dict(self):
        return {'epoch': self.epoch, 'population': [list(c) for c in self.population],
                'top_k': [list(c) for c in self.top_k], 'scores': [(list(c), s) for c, s in self.scores.items()],
                'best_placement': [(list(c), None if p is None else [list(u) for u in p])
                                   for c, p in self.best_placement.items()],
                'seen': [list(c) for c in self.seen], 'rng': self.rng.bit_generator.state,
                'history': [[h[0], list(h[1]), h[2], h[3]] for h in self.history]}

    def load_state_dict(self, state):
        self.epoch = int(state['epoch'])
        self.population = [tuple(c) for c in state['population']]
        self.top_k = [tuple(c) for c in state['top_k']]
        self.scores = {tuple(c): float(s) for c, s in state['scores']}
        self.best_placement = {tuple(c): None if p is None else tuple(tuple(u) for u in p)
                               for c, p in state['best_placement']}
        self.seen = {tuple(c) for c in state['seen']}
        self.rng.bit_generator.state = state['rng']
        self.history = [(h[0], tuple(h[1]), h[2], h[3]) for h in state['history']]
