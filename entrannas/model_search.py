"""The EnTranNAS super-net: Engine-cells, Transit-cells, feature sharing (and the plain DARTS super-net).

* ``EngineCell``: a differentiable DARTS-style cell, x_j = sum_{i<j} sum_k w^k_{i,j} o^k_i(x_i), with w = p =
  softmax(alpha / tau) (EnTranNAS) or w = q_hat (EnTranNAS-DST); (edge, op) pairs with w = 0 are skipped.
* ``TransitCell``: runs only the currently derived set, x_j = sum_{(i,k) in S_j} o^k_i(x_i) (unit weights, no
  architecture parameters), exactly like an evaluation cell.
* Feature sharing: with ``feature_sharing=True`` a cell holds one op set per *source node* (nodes 0..steps),
  ``SharedMixedOps``; o^k_i(x_i) is computed once and reused by every successor j. With ``False`` every edge owns
  its op set, as in DARTS. The module tree keeps DARTS's names (``cells.N._ops.E._ops.K``), so with
  ``feature_sharing=False`` the state_dict keys are those of quark0/darts ``model_search.Network``.
* ``Network(..., mode='darts', engine_cells=range(layers), feature_sharing=False)`` is the DARTS super-net.
"""
import torch
import torch.nn as nn

from derivation import darts_derive, dst_derive, dst_edge_weights, edge_index, num_edges, softmax_weights
from genotypes import FlexGenotype, Genotype
from operations import OPS, PRIMITIVES, PRIMITIVES_NO_NONE, FactorizedReduce, ReLUConvBN

MODES = ('darts', 'entrannas', 'dst')


class SharedMixedOps(nn.Module):
    """One instance of every candidate op on one input (search BN: ``affine=False``; pooling + BN)."""

    def __init__(self, C, stride, primitives=PRIMITIVES):
        super().__init__()
        self._ops = nn.ModuleList()
        for primitive in primitives:
            op = OPS[primitive](C, stride, False)
            if 'pool' in primitive:
                op = nn.Sequential(op, nn.BatchNorm2d(C, affine=False))
            self._ops.append(op)

    def op(self, k, x):
        """o^k(x)."""
        return self._ops[k](x)

    def forward(self, x, weights):
        """The DARTS mixed op sum_k w_k o^k(x) (ops with w_k == 0 are skipped)."""
        out = None
        for w, op, keep in zip(weights.unbind(0), self._ops, (weights != 0).tolist()):
            if keep:
                out = w * op(x) if out is None else out + w * op(x)
        return out


MixedOp = SharedMixedOps  # quark0/darts name: one op set on one edge


class _SearchCell(nn.Module):
    """Shared structure of Engine- and Transit-cells (same constructor, same parameters, same state_dict keys)."""

    def __init__(self, steps, multiplier, C_prev_prev, C_prev, C, reduction, reduction_prev, primitives=PRIMITIVES,
                 feature_sharing=True):
        super().__init__()
        self.reduction = reduction
        self.primitives = list(primitives)
        self.feature_sharing = feature_sharing
        if reduction_prev:
            self.preprocess0 = FactorizedReduce(C_prev_prev, C, affine=False)
        else:
            self.preprocess0 = ReLUConvBN(C_prev_prev, C, 1, 1, 0, affine=False)
        self.preprocess1 = ReLUConvBN(C_prev, C, 1, 1, 0, affine=False)
        self._steps = steps
        self._multiplier = multiplier
        self._ops = nn.ModuleList()
        if feature_sharing:  # one op set per source node 0 .. steps (the last node has no successor)
            for i in range(2 + steps - 1):
                stride = 2 if reduction and i < 2 else 1
                self._ops.append(SharedMixedOps(C, stride, self.primitives))
        else:  # one op set per edge (DARTS)
            for j in range(steps):
                for i in range(2 + j):
                    stride = 2 if reduction and i < 2 else 1
                    self._ops.append(SharedMixedOps(C, stride, self.primitives))

    def _compute(self, s0, s1, terms):
        """terms[j] = [(k, i, w)] for node j (2..steps+1): x_j = sum w * o^k_i(x_i) (w None: unit weight)."""
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        cache = {}
        for j in range(2, 2 + self._steps):
            acc = None
            for k, i, w in terms[j]:
                if self.feature_sharing:
                    h = cache.get((i, k))
                    if h is None:
                        h = cache[(i, k)] = self._ops[i].op(k, states[i])
                else:
                    h = self._ops[edge_index(i, j, self._steps)].op(k, states[i])
                if w is not None:
                    h = w * h
                acc = h if acc is None else acc + h
            if acc is None:
                raise ValueError(f'node {j} of the cell has no input')
            states.append(acc)
        return torch.cat(states[-self._multiplier:], dim=1)


class EngineCell(_SearchCell):
    """Differentiable cell: ``forward(s0, s1, weights)``, weights = per-edge [num_edges, K] (p or q_hat)."""

    def forward(self, s0, s1, weights):
        keep = (weights != 0).tolist()
        rows = [row.unbind(0) for row in weights.unbind(0)]
        terms = {}
        for j in range(2, 2 + self._steps):
            terms[j] = []
            for i in range(j):
                e = edge_index(i, j, self._steps)
                terms[j].extend((k, i, rows[e][k]) for k in range(len(self.primitives)) if keep[e][k])
        return self._compute(s0, s1, terms)


class TransitCell(_SearchCell):
    """Runs the derived architecture: ``forward(s0, s1, active)``, active = [(op_idx, src, dst)]."""

    def forward(self, s0, s1, active):
        terms = {j: [] for j in range(2, 2 + self._steps)}
        for k, i, j in active:
            terms[j].append((k, i, None))
        return self._compute(s0, s1, terms)


Cell = EngineCell  # quark0/darts name


class Network(nn.Module):
    """Super-net of Engine-cells (``engine_cells``) and Transit-cells (all others).

    mode: ``darts``/``entrannas`` -- Engine weights softmax(alpha / tau), S_j = the DARTS top-2 rule;
          ``dst`` -- Engine weights q_hat (differentiable sparsification), S_j = its non-zero pairs.
    engine_cells: None -> every cell for ``darts``; else the first normal and the first reduction cell.
    stem: ``cifar`` (conv3x3 + BN) or ``imagenet`` (three stride-2 convs, PC-DARTS's ImageNet search net).
    The architecture parameters are plain leaf tensors (not ``nn.Parameter``): ``model.parameters()`` holds the
    network weights only; ``arch_parameters()`` the alphas (and the DST betas).
    """

    def __init__(self, C, num_classes, layers, criterion, steps=4, multiplier=4, stem_multiplier=3,
                 mode='entrannas', engine_cells=None, feature_sharing=True, tau=1.0, primitives=None, stem='cifar'):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f'mode must be one of {MODES}, got {mode!r}')
        if stem not in ('cifar', 'imagenet'):
            raise ValueError(f"stem must be 'cifar' or 'imagenet', got {stem!r}")
        self._C, self._num_classes, self._layers, self._criterion = C, num_classes, layers, criterion
        self._steps, self._multiplier, self._stem_multiplier = steps, multiplier, stem_multiplier
        self.mode, self.tau, self.feature_sharing, self._stem_type = mode, float(tau), feature_sharing, stem
        self.primitives = list(primitives) if primitives is not None else \
            list(PRIMITIVES_NO_NONE if mode == 'dst' else PRIMITIVES)
        unknown = [p for p in self.primitives if p not in OPS]
        if unknown:
            raise ValueError(f'unknown primitives {unknown}')
        if engine_cells is None:
            engine_cells = range(layers) if mode == 'darts' else (0, layers // 3)
        self.engine_cells = sorted({int(i) for i in engine_cells})
        if any(not 0 <= i < layers for i in self.engine_cells):
            raise ValueError(f'engine_cells {self.engine_cells} must lie in 0..{layers - 1}')

        if stem == 'cifar':
            C_curr = stem_multiplier * C
            self.stem = nn.Sequential(nn.Conv2d(3, C_curr, 3, padding=1, bias=False), nn.BatchNorm2d(C_curr))
            C_prev_prev, C_prev, C_curr = C_curr, C_curr, C
            reduction_prev = False
        else:
            self.stem0 = nn.Sequential(
                nn.Conv2d(3, C // 2, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(C // 2),
                nn.ReLU(inplace=False),
                nn.Conv2d(C // 2, C, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(C))
            self.stem1 = nn.Sequential(
                nn.ReLU(inplace=False), nn.Conv2d(C, C, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(C))
            C_prev_prev, C_prev, C_curr = C, C, C
            reduction_prev = True
        self.cells = nn.ModuleList()
        for i in range(layers):
            reduction = i in (layers // 3, 2 * layers // 3)
            if reduction:
                C_curr *= 2
            cls = EngineCell if i in self.engine_cells else TransitCell
            cell = cls(steps, multiplier, C_prev_prev, C_prev, C_curr, reduction, reduction_prev, self.primitives,
                       feature_sharing)
            reduction_prev = reduction
            self.cells.append(cell)
            C_prev_prev, C_prev = C_prev, multiplier * C_curr
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_prev, num_classes)
        self._initialize_alphas()
        self.derive()

    # ---------------------------------------------------------------- architecture parameters
    def _initialize_alphas(self):
        k, K = num_edges(self._steps), len(self.primitives)
        self.alphas_normal = (1e-3 * torch.randn(k, K)).requires_grad_(True)
        self.alphas_reduce = (1e-3 * torch.randn(k, K)).requires_grad_(True)
        self._arch_names = ['alphas_normal', 'alphas_reduce']
        if self.mode == 'dst':  # beta_j = 0 -> threshold t_j = sigmoid(0) = 0.5
            self.betas_normal = torch.zeros(self._steps, requires_grad=True)
            self.betas_reduce = torch.zeros(self._steps, requires_grad=True)
            self._arch_names += ['betas_normal', 'betas_reduce']

    def arch_parameters(self):
        return [getattr(self, n) for n in self._arch_names]

    def arch_state_dict(self):
        return {n: getattr(self, n).detach().clone() for n in self._arch_names}

    def load_arch_state_dict(self, state):
        missing = [n for n in self._arch_names if n not in state]
        if missing:
            raise KeyError(f'architecture state lacks {missing}')
        with torch.no_grad():
            for n in self._arch_names:
                a = getattr(self, n)
                if tuple(state[n].shape) != tuple(a.shape):
                    raise ValueError(f'{n}: shape {tuple(state[n].shape)} does not fit {tuple(a.shape)}')
                a.copy_(state[n])
        self.derive()

    def _apply(self, fn, *args, **kwargs):
        """Move/cast the architecture tensors with the module, keeping them leaf tensors."""
        out = super()._apply(fn, *args, **kwargs)
        if hasattr(self, '_arch_names'):
            for n in self._arch_names:
                a = getattr(self, n)
                setattr(self, n, fn(a.detach()).detach().requires_grad_(a.requires_grad))
        return out

    def arch_weights(self):
        """Engine-cell weights (w_normal, w_reduce), each [num_edges, K]: p (darts/entrannas) or q_hat (dst)."""
        if self.mode == 'dst':
            return (dst_edge_weights(self.alphas_normal, self.betas_normal, self.tau, self._steps),
                    dst_edge_weights(self.alphas_reduce, self.betas_reduce, self.tau, self._steps))
        return softmax_weights(self.alphas_normal, self.tau), softmax_weights(self.alphas_reduce, self.tau)

    # ---------------------------------------------------------------- derivation
    def _derive_one(self, alpha, beta):
        if self.mode == 'dst':
            return dst_derive(alpha, beta, self.primitives, self.tau, self._steps)
        pairs = darts_derive(softmax_weights(alpha.detach(), self.tau), self.primitives, self._steps)
        return [(op, src, 2 + n // 2) for n, (op, src) in enumerate(pairs)]

    @torch.no_grad()
    def derive(self):
        """Recompute S_j of both cell types from the current architecture parameters (call after every update)."""
        bn = getattr(self, 'betas_normal', None)
        br = getattr(self, 'betas_reduce', None)
        self._derived_normal = self._derive_one(self.alphas_normal, bn)
        self._derived_reduce = self._derive_one(self.alphas_reduce, br)
        index = {p: k for k, p in enumerate(self.primitives)}
        self._active_normal = [(index[op], i, j) for op, i, j in self._derived_normal]
        self._active_reduce = [(index[op], i, j) for op, i, j in self._derived_reduce]
        return self._active_normal, self._active_reduce

    def genotype(self):
        """The derived architecture: ``Genotype`` (top-2 rule) or ``FlexGenotype`` (DST), from the current alphas."""
        self.derive()
        concat = list(range(2 + self._steps - self._multiplier, self._steps + 2))
        if self.mode == 'dst':
            return FlexGenotype(normal=list(self._derived_normal), normal_concat=concat,
                                reduce=list(self._derived_reduce), reduce_concat=concat)
        return Genotype(normal=[(op, i) for op, i, _ in self._derived_normal], normal_concat=concat,
                        reduce=[(op, i) for op, i, _ in self._derived_reduce], reduce_concat=concat)

    # ---------------------------------------------------------------- forward
    def forward(self, input):
        if self._stem_type == 'cifar':
            s0 = s1 = self.stem(input)
        else:
            s0 = self.stem0(input)
            s1 = self.stem1(s0)
        w_normal, w_reduce = self.arch_weights() if self.engine_cells else (None, None)
        for cell in self.cells:
            if isinstance(cell, EngineCell):
                out = cell(s0, s1, w_reduce if cell.reduction else w_normal)
            else:
                out = cell(s0, s1, self._active_reduce if cell.reduction else self._active_normal)
            s0, s1 = s1, out
        out = self.global_pooling(s1)
        return self.classifier(out.flatten(1))

    def _loss(self, input, target):
        return self._criterion(self(input), target)

    def new(self):
        """A fresh super-net of the same shape holding a copy of the architecture parameters (DARTS ``new``)."""
        device = self.classifier.weight.device
        model_new = Network(self._C, self._num_classes, self._layers, self._criterion, self._steps,
                            self._multiplier, self._stem_multiplier, self.mode, self.engine_cells,
                            self.feature_sharing, self.tau, self.primitives, self._stem_type).to(device)
        with torch.no_grad():
            for x, y in zip(model_new.arch_parameters(), self.arch_parameters()):
                x.copy_(y)
        model_new.derive()
        return model_new
