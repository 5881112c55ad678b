"""Deriving the discrete cell from the architecture parameters.

* ``darts_derive``: the DARTS top-2 rule (the "hand-crafted rule" EnTranNAS keeps and EnTranNAS-DST replaces).
* ``dst_node_weights`` / ``dst_derive``: EnTranNAS-DST, differentiable sparsification with a learnable
  threshold per node (survey restatement of the paper's equations, Heuillet et al. eqs. 20-22):

      p^k_{i,j}  = softmax_k(alpha_{i,j} / tau)
      r^k_{i,j}  = p^k_{i,j} / max_{i' < j, k'} p^{k'}_{i',j}          (ratio to the node's strongest pair)
      q^k_{i,j}  = ReLU(r^k_{i,j} - t_j),   t_j = sigmoid(beta_j)       (per-node learnable threshold)
      qhat^k_{i,j} = q^k_{i,j} / sum_k' q^{k'}_{i,j}  if the edge keeps any op, else 0   (per-edge renorm.)

  S_j = {(i, k): qhat^k_{i,j} > 0}.

Edges are numbered as in DARTS: node j (0-based intermediate index) has edges offset_j .. offset_j + j + 1 with
offset_j = sum_{t < j} (t + 2); edge offset_j + i comes from node i.
"""
import torch
import torch.nn.functional as F


def edge_offsets(steps=4):
    """First edge index of every intermediate node: [0, 2, 5, 9] for 4 steps."""
    offsets, n = [], 0
    for j in range(steps):
        offsets.append(n)
        n += j + 2
    return offsets


def num_edges(steps=4):
    return sum(j + 2 for j in range(steps))


def edge_index(src, dst, steps=4):
    """Row of alpha for the edge src -> dst (dst counts the two input nodes: 2..steps+1)."""
    return edge_offsets(steps)[dst - 2] + src


def darts_derive(weights, primitives, steps=4):
    """DARTS genotype rule on softmax weights [14, K]: per node keep the 2 edges with the largest non-``none``
    weight (stable sort, strongest first) and on each the argmax non-``none`` op. Returns [(op, src)] * 2*steps."""
    W = weights.detach().cpu().tolist() if torch.is_tensor(weights) else [list(w) for w in weights]
    none = primitives.index('none') if 'none' in primitives else None
    gene, start, n = [], 0, 2
    for _ in range(steps):
        rows = W[start:start + n]

        def strength(i):
            return max(rows[i][k] for k in range(len(rows[i])) if k != none)

        edges = sorted(range(n), key=lambda i: -strength(i))[:2]
        for i in edges:
            k_best = None
            for k in range(len(rows[i])):
                if k != none and (k_best is None or rows[i][k] > rows[i][k_best]):
                    k_best = k
            gene.append((primitives[k_best], i))
        start += n
        n += 1
    return gene


def dst_node_weights(alpha_node, beta_j, tau=1.0):
    """EnTranNAS-DST weights of one node. alpha_node: [n_pred, K]; beta_j: scalar. Returns (p, q, q_hat)."""
    p = F.softmax(alpha_node / tau, dim=-1)
    r = p / p.max()
    t = torch.sigmoid(beta_j)
    q = F.relu(r - t)
    s = q.sum(dim=-1, keepdim=True)
    q_hat = torch.where(s > 0, q / s.clamp_min(torch.finfo(q.dtype).tiny), torch.zeros_like(q))
    return p, q, q_hat


def dst_edge_weights(alpha, beta, tau=1.0, steps=4):
    """q_hat for all edges: [14, K] (zeros mark the pruned (edge, op) pairs); differentiable in alpha, beta."""
    rows = []
    for j, off in enumerate(edge_offsets(steps)):
        rows.append(dst_node_weights(alpha[off:off + j + 2], beta[j], tau)[2])
    return torch.cat(rows, dim=0)


def dst_derive(alpha, beta, primitives, tau=1.0, steps=4):
    """S_j of every node as (op, src, dst) triples, ordered by dst, then src, then op column."""
    with torch.no_grad():
        q_hat = dst_edge_weights(alpha.detach(), beta.detach(), tau, steps)
    out = []
    for j, off in enumerate(edge_offsets(steps)):
        for i in range(j + 2):
            for k in range(q_hat.shape[1]):
                if q_hat[off + i, k] > 0:
                    out.append((primitives[k], i, j + 2))
    return out


def softmax_weights(alpha, tau=1.0):
    """DARTS / EnTranNAS Engine-cell weights: per-edge softmax with temperature tau."""
    return F.softmax(alpha / tau, dim=-1)
