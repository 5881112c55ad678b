"""Evolutionary width search with the prior initial population (BCNet Sec. 3.4; official V2 recipe).

The prior: the training loop keeps the 100 lowest-loss records ``(loss, (subnet_left, subnet_right))``.
``loss_records_to_E`` turns them into E[l, j], the mean recorded loss of records whose layer l had width
``min_bins + j`` (never seen: 1e-4 / 1e-5 = 10, i.e. "very bad"). ``prior_probs`` then fits per-layer
categorical distributions p = softmax(P) by plain SGD (lr 0.01, 2000 steps) on

    J(P) = mean_l sum_j p[l, j] E[l, j] + 1000 * (1 - F_e / (0.4 * FLOPs_limit))^2,
    F_e  = sum_l sum_{a,b} F[l, a, b] p[l, a] p~[l, b],  F[l, a, b] = flops_l (m + a)(m + b) / B^2,

where flops_l is the full-width MAC count of slot l, p~[l] = p[l + 1] (uniform for the last layer) and 0.4
is the empirical constant of the official code. The first population is drawn from p, keeping unseen
candidates whose FLOPs lie in [0.8 * limit, limit]; mutations resample genes from p as well.

Fixes over the official release (see the README): columns index widths consistently (j <-> min_bins + j,
only widths in ``width_range`` are sampled), and genes are drawn from the prior (or uniformly without it)
for every min_bins (the official ``gen_subnet`` returns an empty candidate when min_bins = 1).
"""
import numpy as np
import torch

from sampler import width_range

__all__ = ['loss_records_to_E', 'prior_objective', 'prior_probs', 'BCNetSearcher']


def loss_records_to_E(records, L, W, min_bins=1):
    """E[l, j]: mean loss of the records whose layer l had width ``min_bins + j`` bins (Tensor [L, W])."""
    E = torch.zeros(L, W, dtype=torch.float64)
    count = torch.zeros_like(E)
    for loss, (subnet_l, subnet_r) in records:
        if len(subnet_l) != L or len(subnet_r) != L:
            raise ValueError(f'a loss record has {len(subnet_l)} layers, expected {L}')
        for i, (lo, hi) in enumerate(subnet_l):
            j = int(hi) - int(lo) - min_bins
            if 0 <= j < W:
                E[i, j] += float(loss)
                count[i, j] += 1
    E[count == 0] = 1e-4
    return E / (count + 1e-5)


def _softmax(P):
    e = np.exp(P - P.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def prior_objective(P, E, F, target, penalty):
    """J(P) and its gradient dJ/dP (analytic; ``tests`` check it against torch autograd)."""
    L, W = P.shape
    prob = _softmax(P)
    prob_next = np.vstack([prob[1:], np.full((1, W), 1.0 / W)])
    z = (prob * E).sum(axis=1)
    Fp_next = np.matmul(F, prob_next[:, :, None])[:, :, 0]     # F_l p~_l
    F_e = float((prob * Fp_next).sum())
    r = 1.0 - F_e / target
    J = float(z.mean()) + penalty * r * r
    dF = Fp_next.copy()                                         # d F_e / d prob[l] from layer l's term
    dF[1:] += np.matmul(prob[:-1, None, :], F[:-1])[:, 0, :]   # ... and from layer l-1's (p~_{l-1} = p_l)
    g = E / L - 2.0 * penalty * r / target * dF                 # d J / d prob
    grad = prob * (g - (prob * g).sum(axis=1, keepdims=True))   # through the softmax
    return J, grad


def prior_probs(E, layer_flops, flops_limit, channel_bins, P_init=None, steps=2000, lr=0.01, penalty=1000.,
                target_factor=0.4, min_bins=1, generator=None):
    """Per-layer width distributions p = softmax(P) minimising J(P) of the module docstring (Tensor [L, W]).

    Plain SGD (P <- P - lr dJ/dP) from P_init (default: a standard normal draw from ``generator``, a numpy
    Generator or seed), with the gradient in closed form: the same iterates as torch.optim.SGD on autograd's
    gradient, ~50x faster for these tiny tensors on a CPU.
    """
    E = np.asarray(E, dtype=np.float64)
    L, W = E.shape
    if len(layer_flops) != L:
        raise ValueError(f'layer_flops has {len(layer_flops)} entries, E has {L} layers')
    if not flops_limit or flops_limit <= 0:
        raise ValueError('the prior needs a positive flops_limit')
    widths = np.arange(min_bins, min_bins + W, dtype=np.float64)
    ratio = np.outer(widths, widths) / channel_bins ** 2
    F = np.asarray(layer_flops, dtype=np.float64).reshape(L, 1, 1) * ratio
    if P_init is None:
        rng = generator if isinstance(generator, np.random.Generator) else np.random.default_rng(generator)
        P_init = rng.standard_normal((L, W))
    P = np.array(P_init, dtype=np.float64, copy=True)
    target = target_factor * float(flops_limit)
    for _ in range(steps):
        _, grad = prior_objective(P, E, F, target, penalty)
        P -= lr * grad
    return torch.from_numpy(_softmax(P))


class BCNetSearcher:
    """Evolutionary search over per-slot widths (in bins) under a FLOPs window [0.8 * limit, limit].

    ``search(choices, evaluator, flops_fn, layer_flops, loss_rec)``: ``choices`` is [[min, max]] per slot (the
    supernet's ``get_channel_choices``), ``evaluator(candidate) -> score`` (higher is better; the supernet's
    two-path top-1 or the benchmark's accuracy), ``flops_fn(candidate) -> MACs``. All randomness comes from
    ``seed``: every process of a distributed run must pass the same seed (scores are all-reduced).
    """

    def __init__(self, channel_bins, min_channel_bins=1, prior_init=True, max_epoch=40, population_num=50,
                 top_k_num=10, mutation_num=25, mutation_prob=0.1, crossover_num=25, flops_limit=None,
                 input_shape=(3, 32, 32), flops_min_ratio=0.8, prior_steps=2000, prior_lr=0.01, penalty=1000.,
                 target_factor=0.4, seed=0, max_tries=10000):
        width_range(channel_bins, min_channel_bins)
        self.channel_bins, self.min_channel_bins = channel_bins, min_channel_bins
        self.prior_init, self.max_epoch, self.population_num = prior_init, max_epoch, population_num
        self.top_k_num, self.mutation_num, self.mutation_prob = top_k_num, mutation_num, mutation_prob
        self.crossover_num, self.flops_limit, self.input_shape = crossover_num, flops_limit, tuple(input_shape)
        self.flops_min_ratio, self.prior_steps, self.prior_lr = flops_min_ratio, prior_steps, prior_lr
        self.penalty, self.target_factor, self.max_tries = penalty, target_factor, max_tries
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.epoch = 0
        self.population = []      # the population to evaluate at the next epoch
        self.top_k = []
        self.scores = {}          # candidate -> score (evaluated)
        self.seen = set()         # every candidate ever checked (legal or not)
        self.prob = self._cdf = None   # prior distributions [L, W] (numpy), None without prior
        self.history = []         # per epoch: (epoch, best candidate, best score, evaluated so far)
        self.initial_population = []

    # ------------------------------------------------------------------ candidates
    def _ranges(self, choices):
        return [width_range(int(mx), int(mn)) for mn, mx in choices]

    def _sample_genes(self, ranges, n=None):
        """One width per slot (``n`` rows of them): from the prior p when fitted, else uniform per slot."""
        lo = np.array([r[0] for r in ranges])
        shape = (len(ranges),) if n is None else (n, len(ranges))
        if self.prob is not None:
            u = self.rng.random(shape)
            return lo + (u[..., None] >= self._cdf).sum(axis=-1)
        hi = np.array([r[1] for r in ranges])
        return self.rng.integers(lo, hi + 1, size=shape)

    def gen_subnet(self, ranges):
        return tuple(int(g) for g in self._sample_genes(ranges))

    def is_legal(self, candidate, flops_fn):
        """Unseen and, with a limit, FLOPs in [flops_min_ratio * limit, limit]. Marks it seen."""
        if candidate in self.seen:
            return False
        self.seen.add(candidate)
        if self.flops_limit:
            f = flops_fn(list(candidate))
            if f > self.flops_limit or f < self.flops_min_ratio * self.flops_limit:
                return False
        return True

    def _fill(self, population, ranges, flops_fn, target, chunk=256):
        """Top ``population`` up to ``target`` legal candidates (at most ``max_tries`` draws)."""
        tries = 0
        while len(population) < target and tries < self.max_tries:
            for row in self._sample_genes(ranges, min(chunk, self.max_tries - tries)).tolist():
                tries += 1
                cand = tuple(row)
                if self.is_legal(cand, flops_fn):
                    population.append(cand)
                    if len(population) >= target:
                        break
        return population

    # ------------------------------------------------------------------ prior
    def init_prior(self, choices, loss_rec, layer_flops):
        """Fit the prior p from the loss records (official ``_init_population``, first half)."""
        ranges = self._ranges(choices)
        widths = {hi - lo + 1 for lo, hi in ranges}
        if len(widths) != 1:
            raise ValueError('the prior needs the same number of widths in every slot')
        W = widths.pop()
        E = loss_records_to_E(loss_rec, len(ranges), W, self.min_channel_bins)
        prob = prior_probs(E, layer_flops, self.flops_limit, self.channel_bins, steps=self.prior_steps,
                           lr=self.prior_lr, penalty=self.penalty, target_factor=self.target_factor,
                           min_bins=self.min_channel_bins, generator=self.rng)
        self.set_prior(prob.numpy())
        return self.prob

    def set_prior(self, prob):
        """Use ``prob`` [L, W] (rows: distributions over the slot's widths) for sampling; None = uniform."""
        if prob is None:
            self.prob = self._cdf = None
            return
        prob = np.asarray(prob, dtype=np.float64)
        self.prob = prob / prob.sum(axis=1, keepdims=True)
        self._cdf = np.cumsum(self.prob, axis=1)[:, :-1]

    # ------------------------------------------------------------------ search
    def search(self, choices, evaluator, flops_fn, layer_flops=None, loss_rec=(), callback=None):
        ranges = self._ranges(choices)
        if self.epoch == 0 and not self.population and not self.scores:
            if self.prior_init and self.prob is None:
                if layer_flops is None or not self.flops_limit:
                    raise ValueError('the prior initial population needs layer_flops and a flops_limit')
                self.init_prior(choices, loss_rec, layer_flops)
            self.population = self._fill([], ranges, flops_fn, self.population_num)
            self.initial_population = list(self.population)
        population = list(self.population)
        while self.epoch < self.max_epoch:
            population = self._fill(population, ranges, flops_fn, self.population_num)
            if not population:
                break   # the FLOPs window holds no unseen candidate any more
            for cand in population:
                if cand not in self.scores:
                    self.scores[cand] = float(evaluator(list(cand)))
            pool = {c: None for c in self.top_k + population}
            self.top_k = sorted(pool, key=lambda c: self.scores[c], reverse=True)[:self.top_k_num]
            population = self._mutate(ranges, flops_fn) + self._crossover(flops_fn)
            self.population = population
            self.epoch += 1
            best = self.top_k[0]
            self.history.append((self.epoch, best, self.scores[best], len(self.scores)))
            if callback is not None:
                callback(self)
        return self.result()

    def _parent(self):
        return self.top_k[int(self.rng.integers(len(self.top_k)))]

    def _mutate(self, ranges, flops_fn):
        out, tries = [], self.mutation_num * 10
        while len(out) < self.mutation_num and tries > 0:
            tries -= 1
            parent = np.array(self._parent())
            mask = self.rng.random(parent.size) < self.mutation_prob
            cand = tuple(int(g) for g in np.where(mask, self._sample_genes(ranges), parent))
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

    def result(self):
        if not self.top_k:
            return {'best': None, 'score': float('nan'), 'top_k': [], 'evaluated': len(self.scores),
                    'epochs': self.epoch}
        return {'best': list(self.top_k[0]), 'score': self.scores[self.top_k[0]],
                'top_k': [(list(c), self.scores[c]) for c in self.top_k], 'evaluated': len(self.scores),
                'epochs': self.epoch}

    # ------------------------------------------------------------------ resume
    def state_dict(self):
        return {'epoch': self.epoch, 'population': [list(c) for c in self.population],
                'top_k': [list(c) for c in self.top_k], 'scores': [(list(c), s) for c, s in self.scores.items()],
                'seen': [list(c) for c in self.seen], 'prob': None if self.prob is None else self.prob.tolist(),
                'rng': self.rng.bit_generator.state, 'history': [list(h) for h in self.history],
                'initial_population': [list(c) for c in self.initial_population]}

    def load_state_dict(self, state):
        self.epoch = int(state['epoch'])
        self.population = [tuple(c) for c in state['population']]
        self.top_k = [tuple(c) for c in state['top_k']]
        self.scores = {tuple(c): float(s) for c, s in state['scores']}
        self.seen = {tuple(c) for c in state['seen']}
        self.set_prior(state['prob'])
        self.rng.bit_generator.state = state['rng']
        self.history = [tuple(h) for h in state['history']]
        self.initial_population = [tuple(c) for c in state.get('initial_population', [])]
