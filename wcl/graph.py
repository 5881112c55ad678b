"""Weak labels of WCL: the symmetric 1-nearest-neighbour graph of a batch and its connected components.

Pure torch (no SciPy): component labels by min-label propagation with pointer jumping, which converges in
O(log B) rounds on the 1-NN forests this graph always is.
"""
import torch

__all__ = ['nearest_neighbours', 'nn1_component_labels', 'build_connected_component']


@torch.no_grad()
def nearest_neighbours(sim):
    """``nn(i) = argmax_j (S - 2I)_ij``: each node's most similar other node (cosines are >= -1)."""
    B = sim.shape[0]
    return (sim - 2 * torch.eye(B, dtype=sim.dtype, device=sim.device)).argmax(dim=1)


@torch.no_grad()
def nn1_component_labels(sim):
    """Connected-component index (0..C-1, numbered by each component's smallest node) of every node of the
    undirected graph with edges {i, nn(i)}.

    ``sim`` is the B x B similarity matrix of the (global) batch. Every node has an edge, so every component
    has at least two members.
    """
    B = sim.shape[0]
    nn = nearest_neighbours(sim)
    lab = torch.arange(B, device=sim.device)
    while True:
        new = torch.minimum(lab, lab[nn])                       # i takes the label of nn(i) if smaller
        new = new.scatter_reduce(0, nn, new, reduce='amin')     # nn(i) takes the label of i if smaller
        new = new[new]                                          # pointer jumping: labels are member nodes
        if torch.equal(new, lab):
            break
        lab = new
    return torch.unique(lab, return_inverse=True)[1]


@torch.no_grad()
def build_connected_component(sim):
    """The weak-label mask ``Y_ij = [y_i == y_j]`` (diagonal included) as a B x B bool tensor."""
    y = nn1_component_labels(sim)
    return y[:, None] == y[None, :]
