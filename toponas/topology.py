"""TopoNAS topology: topological variables, the combinatorial distribution over each node's input set, its edge
marginals, the passive-aggressive regulariser and the topology-aware derivation.

Everything here is the spec card's reconstruction [A] of arXiv 2011.09300 (only the abstract was readable):

* node j (2..steps+1) has n_j = j predecessors; its topology is a set S of inputs from T_j, the k-subsets of
  {0..n_j-1} in lexicographic order (k = 2 by default: the DARTS/NASNet constraint), or with ``k = 0`` every
  non-empty subset (a free in-degree; subsets ordered by size, then lexicographically);
* ``param='edge'``: one variable beta_{i,j} per edge and P_j(S) = softmax_S( sum_{i in S} beta_{i,j} );
  ``param='combination'``: one logit per (node, S) and P_j = softmax of node j's slice;
* the edge marginal m_{i,j} = sum_{S in T_j, S contains i} P_j(S) weights edge (i, j) in the super-net; with k = 2
  the marginals of a node sum to 2;
* the derived topology of node j is argmax_S P_j(S).
"""
from itertools import combinations

import torch
import torch.nn as nn
import torch.nn.functional as F


def node_combinations(n_pred, k=2):
    """T_j as a list of index tuples: k-subsets of range(n_pred) in lexicographic order (k >= n_pred: the one full
    set); ``k = 0``: all non-empty subsets, by size then lexicographically."""
    if k < 0:
        raise ValueError(f'k must be >= 0, got {k}')
    if k == 0:
        return [c for r in range(1, n_pred + 1) for c in combinations(range(n_pred), r)]
    return list(combinations(range(n_pred), min(k, n_pred)))


def node_ranges(steps=4):
    """(first edge row, number of predecessors) of every intermediate node; rows are stored node by node."""
    out, offset = [], 0
    for i in range(steps):
        out.append((offset, i + 2))
        offset += i + 2
    return out


def num_edges(steps=4):
    return sum(n for _, n in node_ranges(steps))


def num_topology_variables(steps=4, param='edge', k=2):
    """14 (edge form) or sum_j |T_j| (combination form: 20 for k = 2, 56 for k = 0) with 4 nodes."""
    if param == 'edge':
        return num_edges(steps)
    if param == 'combination':
        return sum(len(node_combinations(n, k)) for _, n in node_ranges(steps))
    raise ValueError(f"param must be 'edge' or 'combination', got {param!r}")


def incidence(combos, n_pred, dtype=torch.float32, device=None):
    """A[c, i] = 1 when input i belongs to the c-th subset."""
    A = torch.zeros(len(combos), n_pred, dtype=dtype, device=device)
    for c, subset in enumerate(combos):
        A[c, list(subset)] = 1.0
    return A


def _n_pred_from_combination_logits(size, k):
    for n in range(max(k, 1), 64):
        if len(node_combinations(n, k)) == size:
            return n
    raise ValueError(f'{size} combination logits match no number of predecessors for k={k}')


def topology_logits(beta_node, param='edge', k=2, n_pred=None):
    """(combos, logits over T_j, incidence matrix) of one node (``n_pred`` is inferred when not given)."""
    if param == 'edge':
        n_pred = beta_node.numel()
        combos = node_combinations(n_pred, k)
        A = incidence(combos, n_pred, beta_node.dtype, beta_node.device)
        return combos, A @ beta_node, A
    if param == 'combination':
        n_pred = n_pred or _n_pred_from_combination_logits(beta_node.numel(), k)
        combos = node_combinations(n_pred, k)
        return combos, beta_node, incidence(combos, n_pred, beta_node.dtype, beta_node.device)
    raise ValueError(f"param must be 'edge' or 'combination', got {param!r}")


def topology_distribution(beta_node, param='edge', k=2, n_pred=None):
    """(combos, combo_prob [|T_j|], marginals [n_pred]) of one node: P_j(S) and m_{i,j} = sum_{S contains i} P_j(S)."""
    combos, logits, A = topology_logits(beta_node, param, k, n_pred)
    prob = F.softmax(logits, dim=-1)
    return combos, prob, prob @ A


def _node_betas(beta, steps, param, k):
    if beta.numel() != num_topology_variables(steps, param, k):
        raise ValueError(f'{param}-form topology variables of a {steps}-node cell (k={k}) have '
                         f'{num_topology_variables(steps, param, k)} entries, got {beta.numel()}')
    out, start = [], 0
    for _, n in node_ranges(steps):
        size = n if param == 'edge' else len(node_combinations(n, k))
        out.append(beta[start:start + size])
        start += size
    return out


def cell_distributions(beta, steps=4, param='edge', k=2):
    """[(combos, combo_prob, marginals)] for every intermediate node of one cell type."""
    return [topology_distribution(b, param, k, n) for b, (_, n) in
            zip(_node_betas(beta.reshape(-1), steps, param, k), node_ranges(steps))]


def cell_marginals(beta, steps=4, param='edge', k=2):
    """The edge marginals of one cell type, Tensor[14] in the edge-row order of the alphas."""
    return torch.cat([m for _, _, m in cell_distributions(beta, steps, param, k)])


def init_topology_variables(steps=4, param='edge', k=2, scale=1e-3, generator=None):
    """1e-3 * N(0, 1), as DARTS initialises alpha."""
    return scale * torch.randn(num_topology_variables(steps, param, k), generator=generator)


def _topk_stable(values, k):
    """Indices of the k largest values; ties: lower index first."""
    order = torch.sort(values, descending=True, stable=True).indices
    return order[:k]


class PassiveAggressiveReg(nn.Module):
    """Passive-aggressive regulariser [A] of the card's section 2, multiplied by ``weight``.

    ``mode='outside_top2'`` (default): L_PA = sum over cell types and nodes of the marginal mass outside the
    topology currently kept, sum_{i not in Top_k(m_j)} m_{i,j}. The kept set is chosen without gradient (top-k of
    the detached marginals, ties to the lower source; with a free in-degree, k = 0, the argmax subset of P_j).
    Passive on the kept edges, aggressive on the others.
    ``mode='entropy'``: sum_j H(P_j) (needs the combination probabilities). ``mode='none'``: 0.
    """

    MODES = ('outside_top2', 'entropy', 'none')

    def __init__(self, weight=0.1, mode='outside_top2', steps=4, k=2):
        super().__init__()
        if mode not in self.MODES:
            raise ValueError(f'mode must be one of {self.MODES}, got {mode!r}')
        self.weight, self.mode, self.steps, self.k = float(weight), mode, steps, k

    def kept_inputs(self, marginals_node, prob_node=None, combos=None):
        """Indices of the currently kept inputs of one node (no gradient)."""
        if self.k == 0:
            if prob_node is None:
                raise ValueError('a free in-degree (k=0) needs the combination probabilities')
            combos = combos or node_combinations(marginals_node.numel(), 0)
            return torch.tensor(combos[int(torch.argmax(prob_node.detach()))], dtype=torch.long)
        return _topk_stable(marginals_node.detach(), min(self.k, marginals_node.numel()))

    def forward(self, marginals_list, probs_list=None):
        """``marginals_list``: one Tensor[14] per cell type; ``probs_list``: per cell type, the list of per-node
        combination probabilities (needed by ``entropy`` and by ``k = 0``)."""
        ref = marginals_list[0]
        total = ref.new_zeros(())
        if self.mode == 'none' or self.weight == 0:
            return total
        for t, marg in enumerate(marginals_list):
            for j, (offset, n) in enumerate(node_ranges(self.steps)):
                prob = None if probs_list is None else probs_list[t][j]
                if self.mode == 'entropy':
                    if prob is None:
                        raise ValueError("mode 'entropy' needs the combination probabilities")
                    total = total - (prob * torch.log(prob.clamp_min(1e-30))).sum()
                    continue
                m = marg[offset:offset + n]
                keep = self.kept_inputs(m, prob)
                total = total + m.sum() - m[keep].sum()
        return self.weight * total


def _best_op(alpha_row, primitives):
    """argmax over non-``none`` of softmax(alpha_row) (first maximum on ties)."""
    w = F.softmax(alpha_row.detach().float(), dim=-1).clone()
    if 'none' in primitives:
        w[primitives.index('none')] = -1.0
    return primitives[int(torch.argmax(w))]


def derive_topology(beta, steps=4, param='edge', k=2):
    """Per node, the kept inputs S*_j = argmax_S P_j(S), listed by decreasing marginal (ties: lower source)."""
    out = []
    for b, (_, n) in zip(_node_betas(beta.detach().reshape(-1).float(), steps, param, k), node_ranges(steps)):
        combos, logits, A = topology_logits(b, param, k, n)
        marg = F.softmax(logits, -1) @ A
        best = combos[int(torch.argmax(logits))]
        out.append(sorted(best, key=lambda i: (-float(marg[i]), i)))
    return out


def derive_genotype(alpha, beta, primitives, param='edge', k=2, steps=4):
    """Topology-aware derivation: the topology from beta alone, the op of each kept edge from alpha alone.

    Returns ``[(op, src)]`` (two per node, the DARTS format) for k = 2, ``[(op, src, node)]`` otherwise.
    """
    out = []
    for j, ((offset, _), inputs) in enumerate(zip(node_ranges(steps), derive_topology(beta, steps, param, k))):
        for src in inputs:
            out.append((_best_op(alpha[offset + src], primitives), int(src), j + 2))
    if k == 2:
        return [(op, src) for op, src, _ in out]
    return out


def darts_derive(alpha, primitives, k=2, steps=4, edge_weights=None):
    """The DARTS rule: per node keep the k edges with the largest max non-``none`` softmax weight (stable order,
    strongest first) and take the argmax non-``none`` op on each. ``edge_weights`` (PC-DARTS edge normalisation)
    multiply the softmax rows first."""
    W = F.softmax(alpha.detach().float(), dim=-1)
    if edge_weights is not None:
        W = W * edge_weights.detach().float().reshape(-1, 1)
    none = primitives.index('none') if 'none' in primitives else None
    keep_cols = [c for c in range(len(primitives)) if c != none]
    out = []
    for offset, n in node_ranges(steps):
        rows = W[offset:offset + n]
        strength = [max(float(rows[i, c]) for c in keep_cols) for i in range(n)]
        edges = sorted(range(n), key=lambda i: -strength[i])[:k]
        for i in edges:
            best = max(keep_cols, key=lambda c: (float(rows[i, c]), -c))
            out.append((primitives[best], i))
    return out
