import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from graph import build_connected_component, nearest_neighbours, nn1_component_labels
from losses import nt_xent_logits, sup_contra
from models import WCL


def sim_from_nn(nn_list, extra=()):
    """A similarity matrix whose row-wise arg-max (off the diagonal) is ``nn_list``."""
    B = len(nn_list)
    S = torch.full((B, B), -0.5)
    S.fill_diagonal_(1.0)
    for i, j in enumerate(nn_list):
        S[i, j] = 0.9
    for i, j, v in extra:
        S[i, j] = v
    return S


def partition(labels):
    return {frozenset(i for i, y in enumerate(labels.tolist()) if y == c) for c in set(labels.tolist())}


def bfs_components(nn_list):
    B = len(nn_list)
    adj = {i: set() for i in range(B)}
    for i, j in enumerate(nn_list):
        adj[i].add(j)
        adj[j].add(i)
    seen, comps = set(), set()
    for s in range(B):
        if s in seen:
            continue
        stack, comp = [s], set()
        while stack:
            v = stack.pop()
            if v in comp:
                continue
            comp.add(v)
            stack.extend(adj[v] - comp)
        seen |= comp
        comps.add(frozenset(comp))
    return comps


def test_hand_built_graph_components():
    # 0<->1 mutual, 2->1 (a leaf joining 0-1), 3->4, 4->5, 5->4 (chain), 6<->7 mutual pair
    nn = [1, 0, 1, 4, 5, 4, 7, 6]
    S = sim_from_nn(nn)
    assert nearest_neighbours(S).tolist() == nn
    assert partition(nn1_component_labels(S)) == {frozenset({0, 1, 2}), frozenset({3, 4, 5}), frozenset({6, 7})}
    Y = build_connected_component(S)
    assert Y.dtype == torch.bool and Y.diagonal().all() and Y[0, 2] and not Y[2, 3] and Y[6, 7]


def test_ties_pick_the_lowest_index_and_self_is_excluded():
    # node 2 is equally close to 0 and 4 -> takes 0; its self-similarity (1.0) never wins
    S = sim_from_nn([1, 0, 0, 4, 3], extra=[(2, 4, 0.9)])
    assert nearest_neighbours(S).tolist() == [1, 0, 0, 4, 3]
    assert partition(nn1_component_labels(S)) == {frozenset({0, 1, 2}), frozenset({3, 4})}
    # a pair is the smallest component: every node has an edge, so no singleton exists
    assert min(len(c) for c in partition(nn1_component_labels(S))) >= 2


def test_components_equal_breadth_first_search_on_random_batches():
    g = torch.Generator().manual_seed(0)
    for trial in range(30):
        B = int(torch.randint(2, 60, (1,), generator=g))
        u = F.normalize(torch.randn(B, 5, generator=g), dim=1)
        S = u @ u.t()
        nn = nearest_neighbours(S).tolist()
        assert partition(nn1_component_labels(S)) == bfs_components(nn)
        labels = nn1_component_labels(S)
        assert labels.min() == 0 and labels.max() == len(set(labels.tolist())) - 1


def test_sup_contra_hand_computed():
    logits = torch.tensor([[0.0, 1.0, 2.0], [1.0, 0.0, -1.0], [2.0, -1.0, 0.0]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1], [0, 1, 1]], dtype=torch.bool)
    diag = 1 - torch.eye(3)
    # anchor 0: positives {1}, denominator e^1 + e^2
    l0 = -(1.0 - math.log(math.e + math.e ** 2))
    # anchor 1: positives {0, 2}, denominator e^1 + e^-1
    d1 = math.log(math.e + math.e ** -1)
    l1 = -((1.0 - d1) + (-1.0 - d1)) / 2
    # anchor 2: positives {1}, denominator e^2 + e^-1
    l2 = -(-1.0 - math.log(math.e ** 2 + math.e ** -1))
    assert torch.isclose(sup_contra(logits, mask, diag), torch.tensor((l0 + l1 + l2) / 3), atol=1e-6)


def test_nt_xent_layout_equals_direct_formula():
    torch.manual_seed(0)
    n, t = 4, 0.1
    z1, z2 = F.normalize(torch.randn(n, 8), dim=1), F.normalize(torch.randn(n, 8), dim=1)
    logits, labels = nt_xent_logits(z1, z2, t=t)
    assert logits.shape == (2 * n, 2 * n - 1)
    assert labels.tolist() == [n - 1 + i for i in range(n)] + list(range(n))
    Z = torch.cat([z1, z2])
    direct = 0.0
    for a in range(2 * n):
        pos = (a + n) % (2 * n)
        den = sum(math.exp(Z[a] @ Z[c] / t) for c in range(2 * n) if c != a)
        direct += -math.log(math.exp(Z[a] @ Z[pos] / t) / den)
    assert math.isclose(F.cross_entropy(logits, labels).item(), direct / (2 * n), rel_tol=1e-5)


def _two_view_embeddings(n=6, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (F.normalize(torch.randn(n, d, generator=g), dim=1).requires_grad_(),
            F.normalize(torch.randn(n, d, generator=g), dim=1).requires_grad_())


def test_graph_loss_is_swapped_intra_view_and_anchor_only_gradient():
    u1, u2 = _two_view_embeddings()
    model = WCL('resnet18', dim_hidden=8, dim=8, small_input=True, width=4)
    loss, (y1, y2) = model.graph_loss(u1, u2, t=0.1)
    diag = 1 - torch.eye(6)
    Y1 = build_connected_component(u1.detach() @ u1.detach().t())
    Y2 = build_connected_component(u2.detach() @ u2.detach().t())
    assert torch.equal(y1, Y1) and torch.equal(y2, Y2) and not torch.equal(Y1, Y2)
    # view-1 anchors with view-1 columns and view-2 labels, and vice versa; columns detached
    ref = 0.5 * (sup_contra(u1 @ u1.detach().t() / 0.1, Y2, diag) + sup_contra(u2 @ u2.detach().t() / 0.1, Y1, diag))
    assert torch.isclose(loss, ref)
    unswapped = 0.5 * (sup_contra(u1 @ u1.detach().t() / 0.1, Y1, diag) +
                       sup_contra(u2 @ u2.detach().t() / 0.1, Y2, diag))
    assert not torch.isclose(loss, unswapped)
    g_anchor = torch.autograd.grad(loss, [u1, u2])
    g_ref = torch.autograd.grad(ref, [u1, u2])
    assert all(torch.allclose(a, b) for a, b in zip(g_anchor, g_ref))
    # the full-gradient switch also differentiates through the contrast columns
    model.graph_detach_keys = False
    loss_full, _ = model.graph_loss(u1, u2, t=0.1)
    assert torch.isclose(loss_full, loss)
    g_full = torch.autograd.grad(loss_full, [u1, u2])
    assert not torch.allclose(g_full[0], g_anchor[0])


def test_multicrop_keeps_only_crops_near_their_image():
    torch.manual_seed(0)
    model = WCL('resnet18', dim_hidden=8, dim=4, small_input=True, width=4)
    u1 = F.normalize(torch.eye(4) + 0.01, dim=1)       # 4 images with orthogonal views
    u2 = F.normalize(torch.eye(4) + 0.02, dim=1)
    y1 = build_connected_component(u1 @ u1.t())
    y2 = build_connected_component(u2 @ u2.t())
    # crop 0 of image 0 points at image 0; crop of image 1 points at image 3 (dropped with knn_k = 2)
    small = F.normalize(torch.tensor([[1.0, 0, 0, 0], [0, 0, 0, 1.0], [0, 0, 1.0, 0], [0, 0, 0, 1.0]]), dim=1)
    total, kept = model.multicrop_loss(small, 1, u1, u2, y1, y2, t=0.1, knn_k=2)
    assert kept == 3  # images 0, 2, 3 kept; image 1's crop is nearest to image 3's views
    g = torch.cat([u1, u2])
    keep = torch.tensor([0, 2, 3])
    comp = (y1 | y2)[keep]
    ref = sup_contra(small[keep] @ g.t() / 0.1, torch.cat([comp, comp], 1)) * 3
    assert torch.isclose(total, ref)
