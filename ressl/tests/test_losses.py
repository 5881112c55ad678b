"""The relation loss, InfoNCE warm-up and teacher entropy against hand computations."""
import inspect
import math

import pytest
import torch

import losses


def softmax(row, tau):
    e = [math.exp(v / tau) for v in row]
    return [x / sum(e) for x in e]


def hand_relation_loss(lq, lk, tau_s, tau_t):
    """-(1/N) sum_i sum_j q_i(j) log p_i(j), q from the teacher logits at tau_t, p from the student's at tau_s."""
    total = 0.0
    for row_q, row_k in zip(lq, lk):
        p, q = softmax(row_q, tau_s), softmax(row_k, tau_t)
        total += -sum(qj * math.log(pj) for qj, pj in zip(q, p))
    return total / len(lq)


LQ = [[0.3, -0.2, 0.5], [0.1, 0.0, -0.4]]
LK = [[0.2, -0.1, 0.6], [-0.3, 0.2, 0.1]]


def test_relation_loss_matches_hand_computation():
    got = losses.relation_loss(torch.tensor(LQ, dtype=torch.float64), torch.tensor(LK, dtype=torch.float64))
    assert got.item() == pytest.approx(hand_relation_loss(LQ, LK, tau_s=0.1, tau_t=0.04), rel=1e-12)


def test_temperatures_are_not_swapped():
    """tau_t = 0.04 sharpens the *teacher* target, tau_s = 0.1 is the student's (a third-party port swapped them)."""
    lq, lk = torch.tensor(LQ, dtype=torch.float64), torch.tensor(LK, dtype=torch.float64)
    right = hand_relation_loss(LQ, LK, tau_s=0.1, tau_t=0.04)
    swapped = hand_relation_loss(LQ, LK, tau_s=0.04, tau_t=0.1)
    assert abs(right - swapped) > 1e-2  # the two differ, so the check below can tell them apart
    assert losses.relation_loss(lq, lk).item() == pytest.approx(right, rel=1e-12)
    assert losses.ReSSLLoss()(lq, lk).item() == pytest.approx(right, rel=1e-12)
    for fn in (losses.relation_loss, losses.ReSSLLoss.__init__):
        params = inspect.signature(fn).parameters
        assert params['tau_s'].default == 0.1 and params['tau_t'].default == 0.04
    # the target is sharper than the student's distribution at equal logits
    assert losses.teacher_entropy(lk, 0.04) < losses.teacher_entropy(lk, 0.1)


def test_relation_loss_is_kl_plus_teacher_entropy():
    torch.manual_seed(0)
    lq, lk = torch.randn(4, 7), torch.randn(4, 7)
    q = torch.softmax(lk / 0.04, 1)
    kl = (q * (q.log() - torch.log_softmax(lq / 0.1, 1))).sum(1).mean()
    assert losses.relation_loss(lq, lk).item() == pytest.approx((kl + losses.teacher_entropy(lk)).item(), rel=1e-5)


def test_gradient_flows_only_through_the_student():
    torch.manual_seed(0)
    lq = torch.randn(3, 5, requires_grad=True)
    lk = torch.randn(3, 5, requires_grad=True)
    losses.relation_loss(lq, lk).backward()
    assert lk.grad is None
    assert lq.grad is not None and lq.grad.abs().sum() > 0
    # d L / d logits_q = (p - q) / (N tau_s)
    p, q = torch.softmax(lq.detach() / 0.1, 1), torch.softmax(lk.detach() / 0.04, 1)
    assert torch.allclose(lq.grad, (p - q) / (3 * 0.1), atol=1e-6)


def test_loss_is_minimal_when_student_matches_teacher():
    lk = torch.tensor([[0.5, 0.1, -0.3]])
    matched = losses.relation_loss(lk * 0.1 / 0.04, lk)  # p == q
    assert matched.item() == pytest.approx(losses.teacher_entropy(lk).item(), rel=1e-6)
    assert losses.relation_loss(lk, lk).item() > matched.item()


def test_infonce_matches_hand_computation():
    q = torch.tensor([[0.6, 0.8], [1.0, 0.0]], dtype=torch.float64)
    k = torch.tensor([[0.0, 1.0], [0.6, 0.8]], dtype=torch.float64)
    queue = torch.tensor([[1.0, 0.0, -0.6], [0.0, 1.0, 0.8]], dtype=torch.float64)  # D x K columns
    tau, expected = 0.1, 0.0
    for qi, ki in zip(q.tolist(), k.tolist()):
        pos = math.exp(sum(a * b for a, b in zip(qi, ki)) / tau)
        neg = sum(math.exp(sum(a * b for a, b in zip(qi, col)) / tau) for col in queue.T.tolist())
        expected += -math.log(pos / (pos + neg))
    expected /= 2
    assert losses.infonce_loss(q, k, queue, tau).item() == pytest.approx(expected, rel=1e-12)
    l_pos, l_neg = (q * k).sum(1), q @ queue
    assert losses.infonce_from_logits(l_pos, l_neg, tau).item() == pytest.approx(expected, rel=1e-12)


def test_infonce_gradient_does_not_reach_the_teacher():
    q = torch.nn.functional.normalize(torch.randn(3, 4), dim=1).requires_grad_()
    k = torch.nn.functional.normalize(torch.randn(3, 4), dim=1).requires_grad_()
    losses.infonce_loss(q, k, torch.randn(4, 6)).backward()
    assert k.grad is None and q.grad is not None


def test_teacher_entropy_of_uniform_relation_is_log_k():
    assert losses.teacher_entropy(torch.zeros(2, 16)).item() == pytest.approx(math.log(16), rel=1e-6)
