"""MCT searcher: hierarchical node selection on the trained tree (MCT-NAS, Sec. 3.3).

Repeats until ``search_num`` distinct paths are scored: ``tree.hierarchical_sample`` (re-evaluating
rarely visited nodes with the cheap loss ``eval_loss_fn`` and reward tilde_L / loss), then the path is
scored with ``eval_acc_fn`` (BN-recalibrated accuracy for a supernet, a table lookup for the benchmark) and
removed from the tree so that it is never proposed again.
"""
import math


class MCTSearcher:
    def __init__(self, n_thrd=10, flops_min=0, flops_limit=-1, tau=1.0, search_num=20, C2=None):
        if search_num < 1:
            raise ValueError(f'search_num must be >= 1, got {search_num}')
        self.n_thrd, self.flops_min, self.flops_limit = n_thrd, flops_min, flops_limit
        self.tau, self.search_num, self.C2 = tau, search_num, C2
        self.n_loss_evals = 0
        self.history = []  # (subnet, score) in the order they were scored

    @property
    def window(self):
        return self.flops_min, (math.inf if self.flops_limit is None or self.flops_limit < 0 else self.flops_limit)

    def search(self, model, eval_loss_fn, eval_acc_fn, flops_fn=None, tree=None, tilde_L=None, top_k=10,
               callback=None):
        """Returns the ``top_k`` (subnet, score) pairs, best first. ``eval_*_fn(model, subnet) -> float``.

        ``tree`` and ``tilde_L`` come from the trained ``MCTSampler`` (tilde_L frozen at its last value).
        ``callback(subnet, score)`` is called after each scored path (logging, checkpointing).
        """
        if tree is None or tilde_L is None:
            raise ValueError('search needs the trained tree and its tilde_L')
        lo, hi = self.window
        scored = {tuple(s): v for s, v in self.history}

        def loss_fn(subnet):
            self.n_loss_evals += 1
            return eval_loss_fn(model, subnet)

        while len(scored) < self.search_num:
            path = tree.hierarchical_sample(self.n_thrd, loss_fn, (lo, hi), tilde_L, flops_fn, C2=self.C2,
                                            tau=self.tau)
            if path is None:  # every leaf of the tree was scored or left the window
                break
            key = tuple(path)
            if key in scored or (flops_fn is not None and not lo <= flops_fn(path) <= hi):
                tree.remove_leaf_node(path)
                continue
            score = float(eval_acc_fn(model, path))
            tree.remove_leaf_node(path)
            scored[key] = score
            self.history.append((list(path), score))
            if callback is not None:
                callback(list(path), score)
        return sorted(((list(k), v) for k, v in scored.items()), key=lambda kv: -kv[1])[:top_k]

    def state_dict(self):
        return {'history': [list(s) for s, _ in self.history],
                'scores': [v for _, v in self.history], 'n_loss_evals': self.n_loss_evals}

    def load_state_dict(self, state):
        self.history = [(list(s), float(v)) for s, v in zip(state['history'], state['scores'])]
        self.n_loss_evals = state['n_loss_evals']
