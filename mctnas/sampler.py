"""MCT sampler: the three-phase training-time architecture sampler of MCT-NAS.

iter < warmup_iters                   uniform paths, no reward bookkeeping;
warmup_iters <= iter < mct_start_iter uniform paths, the tree, G and tilde_L are updated (tree building);
iter >= mct_start_iter                paths drawn from the tree (UCT softmax), rewards keep updating it.
With a FLOPs window up to ``max_times`` draws are made until one falls inside; else the last one is used.
"""
import math
import random

from mct import MCTree, reward_update


class MCTSampler:
    def __init__(self, flops_min=0, flops_max=math.inf, max_times=100, warmup_iters=0, mct_start_iter=0,
                 beta=0.9, gamma=0.9, C1=1.0, C2=1.0, tau=1.0, rng=None):
        if mct_start_iter < warmup_iters:
            raise ValueError(f'mct_start_iter ({mct_start_iter}) must be >= warmup_iters ({warmup_iters})')
        if not 0.0 <= beta < 1.0 or not 0.0 <= gamma < 1.0:
            raise ValueError(f'beta and gamma must lie in [0, 1), got {beta}, {gamma}')
        if tau <= 0:
            raise ValueError(f'tau must be > 0, got {tau}')
        self.flops_min, self.flops_max, self.max_times = flops_min, flops_max, max_times
        self.warmup_iters, self.mct_start_iter = warmup_iters, mct_start_iter
        self.beta, self.gamma, self.C1, self.C2, self.tau = beta, gamma, C1, C2, tau
        self.rng = rng if rng is not None else random.Random(0)
        self.iter = 0
        self.tilde_L = 0.0
        self.tree = None

    def init_tree(self, choices):
        """Create the (empty) tree for ``choices`` ops per layer; ``gen_subnet`` does it on first use."""
        return self._tree(choices)

    def _tree(self, choices):
        if self.tree is None:
            self.tree = MCTree(choices, gamma=self.gamma, C1=self.C1, C2=self.C2, tau=self.tau, rng=self.rng)
        return self.tree

    @property
    def phase(self):
        if self.iter < self.warmup_iters:
            return 'uniform'
        return 'build' if self.iter < self.mct_start_iter else 'mct'

    def _in_window(self, subnet, flops_fn):
        return flops_fn is None or self.flops_min <= flops_fn(subnet) <= self.flops_max

    def gen_subnet(self, choices, flops_fn=None):
        """One path for the current iteration (``choices``: number of ops per layer)."""
        tree = self._tree(choices)
        for _ in range(max(1, self.max_times)):
            if self.iter < self.mct_start_iter:
                subnet = [self.rng.randrange(c) for c in choices]
            else:
                subnet = tree.sample(self.C1, self.C2, self.tau)
            if self._in_window(subnet, flops_fn):
                break
        return subnet

    def update_reward(self, subnet, loss):
        """Feed the path's training loss (a float taken before backward); advances the iteration counter."""
        if self.iter >= self.warmup_iters:
            loss = float(loss)
            if not math.isfinite(loss) or loss <= 0:
                raise ValueError(f'the reward needs a finite positive loss, got {loss}')
            self.tilde_L, q = reward_update(self.tilde_L, loss, self.beta)
            self.tree.update(subnet, q)
        self.iter += 1

    def state_dict(self):
        return {'iter': self.iter, 'tilde_L': self.tilde_L, 'rng': self.rng.getstate(),
                'tree': None if self.tree is None else self.tree.state_dict()}

    def load_state_dict(self, state, choices=None):
        self.iter, self.tilde_L = state['iter'], state['tilde_L']
        self.rng.setstate(state['rng'])
        if state['tree'] is not None:
            self._tree(choices or state['tree']['choices']).load_state_dict(state['tree'])
            self.tree.rng = self.rng
