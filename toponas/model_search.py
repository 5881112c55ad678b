"""The search super-net: the DARTS super-net (``quark0/darts/cnn/model_search.py``) with the node sum weighted by
TopoNAS's edge marginals, on top of DARTS (``base='darts'``) or PC-DARTS (``base='pcdarts'``).

``topo_param='none'`` gives the plain base method: DARTS (every edge weighted 1) or PC-DARTS (its own edge
normalisation ``betas``, softmax over the incoming edges of a node). ``topo_param='edge' | 'combination'`` gives
TopoNAS: the weights of the edges are the marginals of the combinatorial distribution (``topology.py``). With
``fixed_topology = True`` every edge weight is 1, which is exactly the DARTS super-net.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from genotypes import PRIMITIVES, Genotype
from operations import OPS, FactorizedReduce, ReLUConvBN
from topology import (cell_distributions, darts_derive, derive_genotype, init_topology_variables, node_ranges,
                      num_edges)

TOPO_PARAMS = ('edge', 'combination', 'none')
BASES = ('darts', 'pcdarts')


def channel_shuffle(x, groups):
    b, c, h, w = x.shape
    return x.view(b, groups, c // groups, h, w).transpose(1, 2).contiguous().view(b, c, h, w)


class MixedOp(nn.Module):
    """sum_o softmax(alpha)_o * o(x). With ``partial=K`` (PC-DARTS) only the first C/K channels go through the ops;
    the rest bypass them (max-pooled 2x2 on a reduction edge), are concatenated back and channel-shuffled."""

    def __init__(self, C, stride, partial=1, primitives=PRIMITIVES):
        super().__init__()
        self.partial = partial
        self.mp = nn.MaxPool2d(2, 2) if partial > 1 else None
        self._ops = nn.ModuleList()
        Cp = C // partial
        for primitive in primitives:
            op = OPS[primitive](Cp, stride, False)
            if 'pool' in primitive:
                op = nn.Sequential(op, nn.BatchNorm2d(Cp, affine=False))
            self._ops.append(op)

    def forward(self, x, weights):
        if self.partial == 1:
            return sum(w * op(x) for w, op in zip(weights, self._ops))
        c = x.shape[1] // self.partial
        xa, xb = x[:, :c], x[:, c:]
        out = sum(w * op(xa) for w, op in zip(weights, self._ops))
        if out.shape[2] != x.shape[2]:
            xb = self.mp(xb)
        return channel_shuffle(torch.cat([out, xb], dim=1), self.partial)


class Cell(nn.Module):
    """A search cell: x_j = sum_{i<j} edge_weights[i,j] * MixedOp_{i,j}(x_i); output = concat of the last
    ``multiplier`` nodes."""

    def __init__(self, steps, multiplier, C_prev_prev, C_prev, C, reduction, reduction_prev, partial=1,
                 primitives=PRIMITIVES):
        super().__init__()
        self.reduction = reduction
        if reduction_prev:
            self.preprocess0 = FactorizedReduce(C_prev_prev, C, affine=False)
        else:
            self.preprocess0 = ReLUConvBN(C_prev_prev, C, 1, 1, 0, affine=False)
        self.preprocess1 = ReLUConvBN(C_prev, C, 1, 1, 0, affine=False)
        self._steps = steps
        self._multiplier = multiplier
        self._ops = nn.ModuleList()
        for i in range(steps):
            for j in range(2 + i):
                stride = 2 if reduction and j < 2 else 1
                self._ops.append(MixedOp(C, stride, partial, primitives))

    def forward(self, s0, s1, weights, edge_weights=None):
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        offset = 0
        for _ in range(self._steps):
            if edge_weights is None:  # the DARTS node: every incoming edge with weight 1
                s = sum(self._ops[offset + j](h, weights[offset + j]) for j, h in enumerate(states))
            else:
                s = sum(edge_weights[offset + j] * self._ops[offset + j](h, weights[offset + j])
                        for j, h in enumerate(states))
            offset += len(states)
            states.append(s)
        return torch.cat(states[-self._multiplier:], dim=1)


class Network(nn.Module):
    """The search network (CIFAR): stem, ``layers`` cells (reductions at layers//3 and 2*layers//3), GAP, linear.

    Architecture variables (``nn.Parameter``, kept out of ``weights()``):
    ``alphas_normal``/``alphas_reduce`` [14, 8] and, for TopoNAS or PC-DARTS, ``betas_normal``/``betas_reduce``
    (topology variables: [14] edge form, [sum_j |T_j|] combination form; PC-DARTS: its edge normalisation [14]).
    """

    def __init__(self, C, num_classes, layers, criterion, steps=4, multiplier=4, stem_multiplier=3,
                 topo_param='edge', base='darts', topo_k=2, partial_k=4, primitives=PRIMITIVES):
        super().__init__()
        if topo_param not in TOPO_PARAMS:
            raise ValueError(f'topo_param must be one of {TOPO_PARAMS}, got {topo_param!r}')
        if base not in BASES:
            raise ValueError(f'base must be one of {BASES}, got {base!r}')
        self._C, self._num_classes, self._layers = C, num_classes, layers
        self._criterion = criterion
        self._steps, self._multiplier, self._stem_multiplier = steps, multiplier, stem_multiplier
        self.topo_param, self.base, self.topo_k, self.partial_k = topo_param, base, topo_k, partial_k
        self.primitives = list(primitives)
        self.fixed_topology = False  # True: every edge weight is 1 (the DARTS super-net)
        partial = partial_k if base == 'pcdarts' else 1

        C_curr = stem_multiplier * C
        self.stem = nn.Sequential(nn.Conv2d(3, C_curr, 3, padding=1, bias=False), nn.BatchNorm2d(C_curr))
        C_prev_prev, C_prev, C_curr = C_curr, C_curr, C
        self.cells = nn.ModuleList()
        reduction_prev = False
        for i in range(layers):
            reduction = i in (layers // 3, 2 * layers // 3)
            if reduction:
                C_curr *= 2
            self.cells.append(Cell(steps, multiplier, C_prev_prev, C_prev, C_curr, reduction, reduction_prev,
                                   partial, self.primitives))
            reduction_prev = reduction
            C_prev_prev, C_prev = C_prev, multiplier * C_curr
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_prev, num_classes)
        self._initialize_alphas()

    # ------------------------------------------------------------------ architecture variables
    def _initialize_alphas(self):
        k = num_edges(self._steps)
        n_ops = len(self.primitives)
        self.alphas_normal = nn.Parameter(1e-3 * torch.randn(k, n_ops))
        self.alphas_reduce = nn.Parameter(1e-3 * torch.randn(k, n_ops))
        names = ['alphas_normal', 'alphas_reduce']
        if self.topo_param != 'none':
            param = self.topo_param
            self.betas_normal = nn.Parameter(init_topology_variables(self._steps, param, self.topo_k))
            self.betas_reduce = nn.Parameter(init_topology_variables(self._steps, param, self.topo_k))
            names += ['betas_normal', 'betas_reduce']
        elif self.base == 'pcdarts':
            self.betas_normal = nn.Parameter(1e-3 * torch.randn(k))
            self.betas_reduce = nn.Parameter(1e-3 * torch.randn(k))
            names += ['betas_normal', 'betas_reduce']
        self._arch_names = names

    def arch_parameters(self):
        """[alphas_normal, alphas_reduce] + [betas_normal, betas_reduce] when present."""
        return [getattr(self, n) for n in self._arch_names]

    def weights(self):
        """The network weights (everything but the architecture variables), for the SGD optimizer."""
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def named_weights(self):
        arch = set(self._arch_names)
        return [(n, p) for n, p in self.named_parameters() if n not in arch]

    def topology_distributions(self):
        """(normal, reduce): per node [(combos, combo_prob, marginals)]; None without topology variables."""
        if self.topo_param == 'none':
            return None
        return tuple(cell_distributions(b, self._steps, self.topo_param, self.topo_k)
                     for b in (self.betas_normal, self.betas_reduce))

    def _pc_edge_norm(self, beta):
        """PC-DARTS edge normalisation: softmax of beta over the incoming edges of every node."""
        return torch.cat([F.softmax(beta[o:o + n], dim=-1) for o, n in node_ranges(self._steps)])

    def topology_marginals(self):
        """(Tensor[14], Tensor[14]): the edge weights of the normal and the reduction cells."""
        if self.topo_param != 'none':
            return tuple(torch.cat([m for _, _, m in dists]) for dists in self.topology_distributions())
        if self.base == 'pcdarts':
            return self._pc_edge_norm(self.betas_normal), self._pc_edge_norm(self.betas_reduce)
        ones = self.alphas_normal.new_ones(num_edges(self._steps))
        return ones, ones

    # ------------------------------------------------------------------ forward
    def forward(self, input):
        w_normal = F.softmax(self.alphas_normal, dim=-1)
        w_reduce = F.softmax(self.alphas_reduce, dim=-1)
        if self.fixed_topology or (self.topo_param == 'none' and self.base == 'darts'):
            e_normal = e_reduce = None
        else:
            e_normal, e_reduce = self.topology_marginals()
        s0 = s1 = self.stem(input)
        for cell in self.cells:
            if cell.reduction:
                s0, s1 = s1, cell(s0, s1, w_reduce, e_reduce)
            else:
                s0, s1 = s1, cell(s0, s1, w_normal, e_normal)
        out = self.global_pooling(s1)
        return self.classifier(out.flatten(1))

    def _loss(self, input, target):
        return self._criterion(self(input), target)

    def new(self):
        """A fresh network of the same configuration holding a copy of the architecture variables."""
        model_new = Network(self._C, self._num_classes, self._layers, self._criterion, self._steps,
                            self._multiplier, self._stem_multiplier, self.topo_param, self.base, self.topo_k,
                            self.partial_k, self.primitives).to(self.alphas_normal.device)
        for x, y in zip(model_new.arch_parameters(), self.arch_parameters()):
            x.data.copy_(y.data)
        model_new.fixed_topology = self.fixed_topology
        return model_new.train(self.training)

    # ------------------------------------------------------------------ derivation
    def genotype(self):
        """TopoNAS: topology from the betas (argmax of P_j), ops from the alphas. Plain base method: the DARTS
        top-2 rule (on the PC-DARTS edge-normalised weights for base=pcdarts)."""
        concat = list(range(2 + self._steps - self._multiplier, self._steps + 2))
        if self.topo_param != 'none':
            normal = derive_genotype(self.alphas_normal, self.betas_normal, self.primitives, self.topo_param,
                                     self.topo_k, self._steps)
            reduce = derive_genotype(self.alphas_reduce, self.betas_reduce, self.primitives, self.topo_param,
                                     self.topo_k, self._steps)
        else:
            e_normal, e_reduce = self.topology_marginals() if self.base == 'pcdarts' else (None, None)
            normal = darts_derive(self.alphas_normal, self.primitives, 2, self._steps, e_normal)
            reduce = darts_derive(self.alphas_reduce, self.primitives, 2, self._steps, e_reduce)
        return Genotype(normal=normal, normal_concat=concat, reduce=reduce, reduce_concat=concat)
