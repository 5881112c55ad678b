"""SPOS-style evolutionary search over paths of the K-shot supernet, and the path evaluator.

Fitness of a path alpha: lam = pi(alpha); the stand-alone network with the combined weights; BN running
statistics reset and recomputed over ``recal_bn_iters`` training batches; top-1 on held-out data.
Evolution (as configured for GreedyNAS in the authors' edgenn code): population 50, 20 generations, top-10
parents, per generation 25 mutants (per-gene probability 0.1) + 25 uniform crossovers; candidates above the
FLOPs limit (or already seen) are rejected and drawn again; the population is topped up with random paths.
"""
import random

import torch
import torch.nn as nn


@torch.no_grad()
def recalibrate_bn(model, loader, iters, device):
    """Reset every BN's running statistics and recompute them as the plain average over ``iters`` batches."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average
    model.train()
    for i, (x, _) in enumerate(loader):
        if i >= iters:
            break
        model(x.to(device))
    for m, mom in zip(bns, saved):
        m.momentum = mom
    model.eval()


@torch.no_grad()
def evaluate_top1(model, loader, device, max_batches=None):
    model.eval()
    correct = total = 0
    for i, (x, y) in enumerate(loader):
        if max_batches is not None and i >= max_batches:
            break
        out = model(x.to(device))
        correct += (out.argmax(1).cpu() == y).sum().item()
        total += y.shape[0]
    return 100.0 * correct / max(1, total)


class PathEvaluator:
    """``evaluate(candidate) -> top-1`` for a candidate ``(arch, widths or None)`` of the K-shot supernet."""

    def __init__(self, supernet, code_fn, bn_loader, val_loader, device, recal_bn_iters=20, val_batches=None):
        self.supernet, self.code_fn = supernet, code_fn
        self.bn_loader, self.val_loader, self.device = bn_loader, val_loader, device
        self.recal_bn_iters, self.val_batches = recal_bn_iters, val_batches

    def __call__(self, cand):
        arch, widths = cand
        lam = self.code_fn(arch, widths)
        net = self.supernet.export_subnet(arch, lam, widths)
        recalibrate_bn(net, self.bn_loader, self.recal_bn_iters, self.device)
        return evaluate_top1(net, self.val_loader, self.device, self.val_batches)


class EvolutionSearcher:
    def __init__(self, population_num=50, max_epoch=20, top_k_num=10, mutation_num=25, mutation_prob=0.1,
                 crossover_num=25, flops_limit=330e6, recal_bn_iters=20, space=None, channel_search=False, seed=0,
                 max_tries=None):
        if space is None:
            from search_space import IMAGENET as space
        self.population_num, self.max_epoch, self.top_k_num = population_num, max_epoch, top_k_num
        self.mutation_num, self.mutation_prob, self.crossover_num = mutation_num, mutation_prob, crossover_num
        self.flops_limit = flops_limit if flops_limit is not None and flops_limit > 0 else float('inf')
        self.recal_bn_iters = recal_bn_iters  # used by the evaluator (PathEvaluator)
        self.space, self.channel_search = space, channel_search
        self.max_tries = max_tries or 100 * max(population_num, mutation_num, crossover_num, 1)
        self.rng = random.Random(seed)
        self.epoch = 0
        self.candidates = []  # the current generation, keys
        self.memory = {}      # key -> score
        self.keep_top_k = []  # keys, best first
        self.history = []     # per generation: (epoch, best score, mean score of the generation)

    # ------------------------------------------------------------------ candidates
    @staticmethod
    def key(arch, widths=None):
        return (tuple(arch), None if widths is None else tuple(widths))

    def legal(self, key):
        arch, widths = key
        return self.space.count_flops(list(arch), None if widths is None else list(widths)) <= self.flops_limit

    def _accept(self, key, pool):
        key = self.key(*self.space.canonical(*key))
        if key in self.memory or key in pool or not self.legal(key):
            return None
        return key

    def random_candidate(self):
        arch = self.space.sample_arch(self.rng)
        widths = self.space.sample_widths(self.rng) if self.channel_search else None
        return (arch, widths)

    def mutate(self, key):
        arch, widths = list(key[0]), None if key[1] is None else list(key[1])
        for i in range(len(arch)):
            if self.rng.random() < self.mutation_prob:
                arch[i] = self.rng.choice(self.space.legal_ops(i))
            if widths is not None and self.rng.random() < self.mutation_prob:
                widths[i] = self.rng.choice(self.space.width_choices)
        return (arch, widths)

    def crossover(self, a, b):
        arch = [self.rng.choice(pair) for pair in zip(a[0], b[0])]
        widths = None if a[1] is None else [self.rng.choice(pair) for pair in zip(a[1], b[1])]
        return (arch, widths)

    def _fill(self, pool, n, make):
        new, tries = [], 0
        while len(new) < n and tries < self.max_tries:
            tries += 1
            key = self._accept(make(), pool)
            if key is not None:
                pool.add(key)
                new.append(key)
        return new

    def next_generation(self):
        pool = set()
        parents = self.keep_top_k[:self.top_k_num]
        mutants = self._fill(pool, self.mutation_num, lambda: self.mutate(self.rng.choice(parents)))
        crosses = self._fill(pool, self.crossover_num,
                             lambda: self.crossover(self.rng.choice(parents), self.rng.choice(parents)))
        rest = self._fill(pool, self.population_num - len(mutants) - len(crosses), self.random_candidate)
        return mutants + crosses + rest

    # ------------------------------------------------------------------ search
    def search(self, evaluate_fn, callback=None, on_generation=None):
        """Run (or resume) the evolution; ``evaluate_fn((arch, widths)) -> score``. Returns the best key.

        ``callback(key, score)`` after every scored candidate; ``on_generation(searcher)`` after every generation
        (a checkpoint hook: the searcher state is consistent there)."""
        if self.epoch == 0 and not self.candidates:
            self.candidates = self._fill(set(), self.population_num, self.random_candidate)
            if not self.candidates:
                raise ValueError(f'no path satisfies the FLOPs limit {self.flops_limit:.0f}')
        while self.epoch < self.max_epoch:
            scores = []
            for key in self.candidates:
                if key not in self.memory:
                    self.memory[key] = float(evaluate_fn((list(key[0]), None if key[1] is None else list(key[1]))))
                    if callback is not None:
                        callback(key, self.memory[key])
                scores.append(self.memory[key])
            ranked = sorted(set(self.keep_top_k) | set(self.candidates), key=lambda k: -self.memory[k])
            self.keep_top_k = ranked[:max(self.top_k_num, 1)]
            best = self.keep_top_k[0]
            self.history.append((self.epoch, self.memory[best], sum(scores) / max(1, len(scores))))
            self.epoch += 1
            self.candidates = self.next_generation() if self.epoch < self.max_epoch else []
            if on_generation is not None:
                on_generation(self)
        return self.keep_top_k[0]

    def top(self, n=None):
        return [(k, self.memory[k]) for k in self.keep_top_k[:n]]

    def state_dict(self):
        return {'epoch': self.epoch, 'candidates': list(self.candidates), 'memory': list(self.memory.items()),
                'keep_top_k': list(self.keep_top_k), 'history': list(self.history), 'rng': self.rng.getstate()}

    def load_state_dict(self, state):
        self.epoch = state['epoch']
        self.candidates = [tuple(k) for k in state['candidates']]
        self.memory = {tuple(k): v for k, v in state['memory']}
        self.keep_top_k = [tuple(k) for k in state['keep_top_k']]
        self.history = [tuple(h) for h in state['history']]
        self.rng.setstate(state['rng'])
