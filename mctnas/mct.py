"""The Monte-Carlo tree of MCT-NAS (Su et al., CVPR 2021, Sec. 3).

A node at depth d is the choice of layer d given the choices of layers 0..d-1; a root-to-leaf path is one
architecture. Each node holds ``visits`` n(v) and the summed ``reward`` R(v); ``G[l][o]`` is the node
communication table shared by every node that holds op ``o`` at layer ``l``. Nodes are created lazily.
"""
import math
import random


def reward_update(tilde_L, loss, beta):
    """Moving average of the training loss and the path reward (Eq. 2-3).

    ``tilde_L <- beta * tilde_L + (1 - beta) * loss``; ``Q = tilde_L / loss`` with the updated average.
    """
    tilde_L = beta * tilde_L + (1.0 - beta) * loss
    return tilde_L, tilde_L / loss


def uct(reward, visits, parent_visits, C1, C2=0.0, G=0.0):
    """UCT score of a child (Eq. 4): R/n + C1 sqrt(ln N / (n + 0.1)) + C2 G.

    Exploitation counts 0 when n = 0; exploration counts 0 when N = 0.
    """
    exploit = reward / visits if visits > 0 else 0.0
    explore = math.sqrt(math.log(parent_visits) / (visits + 0.1)) if parent_visits > 0 else 0.0
    return exploit + C1 * explore + C2 * G


def softmax(scores, tau):
    """exp(s / tau) normalised, with the max subtracted (tau = 0.0025 would overflow otherwise)."""
    m = max(scores)
    e = [math.exp((s - m) / tau) for s in scores]
    z = sum(e)
    return [x / z for x in e]


def draw(probs, u):
    """Inverse-CDF draw of an index with one uniform number ``u`` in [0, 1)."""
    acc = 0.0
    for i, p in enumerate(probs):
        acc += p
        if u < acc:
            return i
    return max(i for i, p in enumerate(probs) if p > 0)  # u at the top of the CDF (rounding)


class MCNode:
    """A tree node; ``children`` holds one slot (MCNode or None) per op of the next layer."""

    __slots__ = ('parent', 'index', 'visits', 'reward', 'children')

    def __init__(self, parent=None, children=1, index=None):
        self.parent = parent
        self.index = index
        self.visits = 0
        self.reward = 0.0
        self.children = [None] * children

    def update(self, r):
        self.visits += 1
        self.reward += r

    def existing(self):
        return [i for i, c in enumerate(self.children) if c is not None]

    def __repr__(self):
        return f'MCNode(index={self.index}, visits={self.visits}, reward={self.reward:.4f})'


class MCTree:
    """Monte-Carlo tree over ``choices`` (number of candidate ops per layer).

    ``C1``, ``C2``, ``tau`` are the defaults of ``sample``; ``gamma`` is the decay of the node-communication
    table ``G``. ``rng`` (a ``random.Random``) makes every draw reproducible.
    """

    def __init__(self, choices, gamma=0.9, C1=1.0, C2=0.0, tau=0.0025, rng=None):
        self.choices = [int(c) for c in choices]
        if not self.choices or min(self.choices) < 1:
            raise ValueError(f'choices must be a non-empty list of positive op counts, got {choices}')
        self.gamma, self.C1, self.C2, self.tau = gamma, C1, C2, tau
        self.rng = rng if rng is not None else random.Random(0)
        self.root = MCNode(None, self.choices[0])
        self.G = [[0.0] * c for c in self.choices]
        self.n_updates = 0

    @property
    def depth(self):
        return len(self.choices)

    def _child_slots(self, depth):
        return self.choices[depth + 1] if depth + 1 < self.depth else 0

    def _check(self, subnet):
        subnet = [int(a) for a in subnet]
        if len(subnet) != self.depth or any(a < 0 or a >= c for a, c in zip(subnet, self.choices)):
            raise ValueError(f'subnet {subnet} does not fit choices {self.choices}')
        return subnet

    def node(self, prefix):
        """The node reached by ``prefix`` (root for []), or None when it does not exist."""
        cur = self.root
        for a in prefix:
            cur = cur.children[int(a)]
            if cur is None:
                return None
        return cur

    def _get_or_create(self, parent, depth, a):
        child = parent.children[a]
        if child is None:
            child = MCNode(parent, self._child_slots(depth), index=a)
            parent.children[a] = child
        return child

    # --- training stage -------------------------------------------------------------------------------
    def update(self, subnet, reward):
        """Backpropagate ``reward`` along the path (root included) and update G (node communication)."""
        subnet = self._check(subnet)
        cur = self.root
        cur.update(reward)
        for d, a in enumerate(subnet):
            cur = self._get_or_create(cur, d, a)
            cur.update(reward)
            self.G[d][a] = self.gamma * self.G[d][a] + (1.0 - self.gamma) * reward
        self.n_updates += 1

    def child_uct(self, node, depth, C1, C2):
        """``uct`` of every child slot (absent children score as n = 0), with ln N computed once."""
        ln_n = math.log(node.visits) if node.visits > 0 else 0.0
        G = self.G[depth]
        scores = []
        for o, child in enumerate(node.children):
            n = 0 if child is None else child.visits
            s = child.reward / n if n > 0 else 0.0
            if C1 and ln_n > 0.0:
                s += C1 * math.sqrt(ln_n / (n + 0.1))
            scores.append(s + C2 * G[o])
        return scores

    def child_probs(self, prefix, C1=None, C2=None, tau=None, ignore_none=False):
        """Softmax policy over the children of ``node(prefix)``; with ``ignore_none`` absent children get 0."""
        C1 = self.C1 if C1 is None else C1
        C2 = self.C2 if C2 is None else C2
        tau = self.tau if tau is None else tau
        node = self.node(prefix)
        if node is None:
            raise ValueError(f'prefix {list(prefix)} is not in the tree')
        return self._probs(node, len(prefix), C1, C2, tau, ignore_none)

    def _probs(self, node, depth, C1, C2, tau, ignore_none):
        scores = self.child_uct(node, depth, C1, C2)
        if not ignore_none:
            return softmax(scores, tau)
        idx = node.existing()
        if not idx:
            raise ValueError('no existing child to choose from')
        p = softmax([scores[i] for i in idx], tau)
        out = [0.0] * len(scores)
        for i, pi in zip(idx, p):
            out[i] = pi
        return out

    def sample(self, C1=None, C2=None, tau=None, ignore_none=False):
        """Walk root -> leaf drawing each child from the UCT softmax; missing children are created."""
        C1 = self.C1 if C1 is None else C1
        C2 = self.C2 if C2 is None else C2
        tau = self.tau if tau is None else tau
        cur, path = self.root, []
        for d in range(self.depth):
            a = draw(self._probs(cur, d, C1, C2, tau, ignore_none), self.rng.random())
            cur = self._get_or_create(cur, d, a)
            path.append(a)
        return path

    # --- search stage ---------------------------------------------------------------------------------
    def remove_leaf_node(self, subnet):
        """Detach the leaf, then every ancestor left without children (never the root)."""
        node = self.node(self._check(subnet))
        if node is None:
            return
        while node is not self.root:
            parent = node.parent
            parent.children[node.index] = None
            if parent.existing() or parent is self.root:
                break
            node = parent

    def _uniform_completion(self, prefix, node):
        path, cur = list(prefix), node
        for _ in range(len(prefix), self.depth):
            idx = cur.existing()
            a = idx[self.rng.randrange(len(idx))]
            path.append(a)
            cur = cur.children[a]
        return path

    def hierarchical_sample(self, n_thrd, eval_fn, flops_limit=(0, math.inf), tilde_L=1.0, flops_fn=None,
                            C2=None, tau=None):
        """Hierarchical node selection (Sec. 3.3): returns a path, or None once the tree is exhausted.

        At depth d with current node P: while n(P) / O_d < ``n_thrd``, complete the prefix uniformly over
        existing children, drop it if its FLOPs leave ``flops_limit``, else reward it with
        ``tilde_L / eval_fn(path)``. Then pick a child with the C1 = 0 softmax among existing children.
        """
        C2 = self.C2 if C2 is None else C2
        tau = self.tau if tau is None else tau
        lo, hi = flops_limit
        if self.root.visits == 0:
            raise ValueError('the tree is empty: update it (train) before hierarchical_sample')
        while True:
            if not self.root.existing():
                return None
            prefix, node, restart = [], self.root, False
            for d in range(self.depth):
                while node.visits / self.choices[d] < n_thrd:
                    path = self._uniform_completion(prefix, node)
                    if flops_fn is not None and not lo <= flops_fn(path) <= hi:
                        self.remove_leaf_node(path)
                        if not node.existing():
                            restart = True
                            break
                        continue
                    self.update(path, tilde_L / eval_fn(path))
                if restart:
                    break
                a = draw(self._probs(node, d, 0.0, C2, tau, True), self.rng.random())
                prefix.append(a)
                node = node.children[a]
            if not restart:
                return prefix

    # --- bookkeeping ----------------------------------------------------------------------------------
    @property
    def size(self):
        """Number of leaves that were visited (rewarded) at least once."""
        count, stack = 0, [(self.root, 0)]
        while stack:
            node, d = stack.pop()
            if d == self.depth:
                count += node.visits > 0
                continue
            stack.extend((c, d + 1) for c in node.children if c is not None)
        return count

    def state_dict(self):
        def enc(node):
            return [node.visits, node.reward, [None if c is None else enc(c) for c in node.children]]
        return {'choices': list(self.choices), 'G': [list(r) for r in self.G], 'root': enc(self.root),
                'n_updates': self.n_updates, 'rng': self.rng.getstate()}

    def load_state_dict(self, state):
        if list(state['choices']) != self.choices:
            raise ValueError(f'tree state has choices {state["choices"]}, expected {self.choices}')

        def dec(data, parent, index):
            node = MCNode(parent, len(data[2]), index)
            node.visits, node.reward = data[0], data[1]
            node.children = [None if c is None else dec(c, node, i) for i, c in enumerate(data[2])]
            return node
        self.root = dec(state['root'], None, None)
        self.G = [list(r) for r in state['G']]
        self.n_updates = state['n_updates']
        self.rng.setstate(state['rng'])
