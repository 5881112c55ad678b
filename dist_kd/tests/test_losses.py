"""DIST / KD losses against hand computations on tiny tensors, their gradient and their invariances."""
import math

import pytest
import torch
import torch.nn.functional as F

import losses
from losses import DIST, KDLoss, KLDivergence, chunked, inter_class_relation, intra_class_relation

# Two instances, three classes, written as probabilities. Centred rows: s0 = [-4, -1, 5] / 30 and
# t0 = [2, -1, -1] / 30, so rho(s0, t0) = -12 / sqrt(42 * 6) = -2 / sqrt(7); the second row swaps the pair.
Y_S = torch.tensor([[0.2, 0.3, 0.5], [0.4, 0.3, 0.3]], dtype=torch.float64)
Y_T = torch.tensor([[0.4, 0.3, 0.3], [0.2, 0.3, 0.5]], dtype=torch.float64)
EPS = 1e-8                             # added to the product of the norms
RHO_ROW = (-12 / 900) / (math.sqrt(42 * 6) / 900 + EPS)              # = -2 / sqrt(7) up to eps
INTER = 1 - RHO_ROW                    # 1 - mean(rho, rho) ~ 1 + 2 / sqrt(7)
# Columns over the batch: [0.2, 0.4] vs [0.4, 0.2] -> centred [-.1, .1] vs [.1, -.1]: -0.02 / (0.02 + eps) ~ -1;
# [0.3, 0.3] is constant -> 0 / (0 + eps) = 0; [0.5, 0.3] vs [0.3, 0.5] -> ~ -1.  L_intra ~ 1 - (-1 + 0 - 1) / 3.
RHO_COL = -0.02 / (0.02 + EPS)
INTRA = 1 - (2 * RHO_COL) / 3


def test_relations_by_hand():
    assert inter_class_relation(Y_S, Y_T).item() == pytest.approx(INTER, abs=1e-12)
    assert intra_class_relation(Y_S, Y_T).item() == pytest.approx(INTRA, abs=1e-12)
    assert INTER == pytest.approx(1 + 2 / math.sqrt(7), abs=1e-6) and INTRA == pytest.approx(5 / 3, abs=1e-6)


@pytest.mark.parametrize('tau', [1.0, 4.0])
def test_dist_on_logits_by_hand(tau):
    # logits whose softmax(z / tau) are exactly Y_S / Y_T (plus an arbitrary per-row offset)
    z_s = tau * Y_S.log() + torch.tensor([[1.5], [-2.0]], dtype=torch.float64)
    z_t = tau * Y_T.log() + 3.0
    for beta, gamma in [(1.0, 1.0), (2.0, 0.5)]:
        loss = DIST(beta=beta, gamma=gamma, tau=tau)(z_s, z_t)
        assert loss.item() == pytest.approx(tau ** 2 * (beta * INTER + gamma * INTRA), rel=1e-10)
    assert DIST(tau=tau, loss_weight=0.5)(z_s, z_t).item() == pytest.approx(0.5 * tau ** 2 * (INTER + INTRA), rel=1e-10)


def _reference_dist(z_s, z_t, tau, eps=1e-8):
    """A plain-Python DIST: softmax, centring, correlation, both terms, tau^2."""
    def softmax(row):
        m = max(row)
        e = [math.exp((v - m) / tau) for v in row]
        return [v / sum(e) for v in e]

    def rho(u, v):
        mu, mv = sum(u) / len(u), sum(v) / len(v)
        cu, cv = [a - mu for a in u], [b - mv for b in v]
        num = sum(a * b for a, b in zip(cu, cv))
        return num / (math.sqrt(sum(a * a for a in cu)) * math.sqrt(sum(b * b for b in cv)) + eps)

    ys, yt = [softmax(r) for r in z_s.tolist()], [softmax(r) for r in z_t.tolist()]
    inter = 1 - sum(rho(a, b) for a, b in zip(ys, yt)) / len(ys)
    cols_s, cols_t = list(zip(*ys)), list(zip(*yt))
    intra = 1 - sum(rho(a, b) for a, b in zip(cols_s, cols_t)) / len(cols_s)
    return tau ** 2 * (inter + intra)


@pytest.mark.parametrize('tau', [1.0, 4.0])
def test_dist_matches_plain_python(tau):
    g = torch.Generator().manual_seed(0)
    z_s = torch.randn(5, 4, generator=g, dtype=torch.float64)
    z_t = 3 * torch.randn(5, 4, generator=g, dtype=torch.float64)
    assert DIST(tau=tau)(z_s, z_t).item() == pytest.approx(_reference_dist(z_s, z_t, tau), rel=1e-9)


def test_eps_is_added_to_the_product_of_norms():
    a = torch.tensor([[3.0, 4.0]], dtype=torch.float64)
    assert losses.cosine_similarity(a, a).item() == pytest.approx(25 / (25 + 1e-8), rel=1e-15)
    # identical inputs: 1 - rho = eps / (|u~|^2 + eps) per row, small but not 0
    y = torch.tensor([[0.1, 0.2, 0.7], [0.5, 0.25, 0.25]], dtype=torch.float64)
    yc = y - y.mean(1, keepdim=True)
    expected = (1e-8 / (yc.norm(dim=1) ** 2 + 1e-8)).mean().item()
    assert inter_class_relation(y, y).item() == pytest.approx(expected, rel=1e-6)
    assert 0 < inter_class_relation(y, y).item() < 1e-5


def test_inter_gradient_by_hand():
    """rho = n / (D + eps), n = s~.t~, D = |s~||t~|:  d rho / d s = t~ / (D + eps) - n |t~| s~ / (|s~| (D + eps)^2)
    (both vectors are centred, so the centring projection leaves them alone); d L_inter / d y_s[i] = -rho' / B."""
    y_s = Y_S.clone().requires_grad_()
    inter_class_relation(y_s, Y_T).backward()
    for i in range(2):
        s, t = Y_S[i] - Y_S[i].mean(), Y_T[i] - Y_T[i].mean()
        n, D = s @ t, s.norm() * t.norm()
        expected = -(t / (D + EPS) - n * t.norm() * s / (s.norm() * (D + EPS) ** 2)) / 2
        assert torch.allclose(y_s.grad[i], expected, rtol=1e-10, atol=1e-12)
        # without eps: -(t~ / D - rho s~ / |s~|^2) / B, the textbook gradient of a correlation
        rho = n / D
        assert torch.allclose(y_s.grad[i], -(t / D - rho * s / s.norm() ** 2) / 2, atol=1e-5)


@pytest.mark.parametrize('tau', [1.0, 4.0])
def test_dist_gradient(tau):
    g = torch.Generator().manual_seed(1)
    z_s = torch.randn(6, 5, generator=g, dtype=torch.float64, requires_grad=True)
    z_t = torch.randn(6, 5, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda z: DIST(tau=tau)(z, z_t), (z_s,))
    DIST(tau=tau)(z_s, z_t).backward()
    assert z_t.grad is None                                   # the teacher is detached
    assert torch.allclose(z_s.grad.sum(1), torch.zeros(6, dtype=torch.float64), atol=1e-10)   # softmax: rows sum 0
    # matching the teacher is a minimum: a small step against the gradient lowers the loss
    with torch.no_grad():
        before = DIST(tau=tau)(z_s, z_t).item()
        after = DIST(tau=tau)(z_s - 1e-3 * z_s.grad, z_t).item()
    assert after < before


def test_relations_invariant_to_positive_scale_and_shift():
    """The paper's motivation: the match is invariant to a positive linear map of each prediction."""
    g = torch.Generator().manual_seed(2)
    y_s = torch.rand(4, 6, generator=g, dtype=torch.float64).softmax(1)
    y_t = torch.rand(4, 6, generator=g, dtype=torch.float64).softmax(1)
    a = torch.tensor([[0.5], [2.0], [7.0], [0.1]], dtype=torch.float64)      # per instance (rows)
    b = torch.tensor([[1.0], [-3.0], [0.2], [5.0]], dtype=torch.float64)
    base = inter_class_relation(y_s, y_t).item()
    assert inter_class_relation(a * y_s + b, y_t).item() == pytest.approx(base, rel=1e-5)   # up to eps
    assert inter_class_relation(y_s, a * y_t + b).item() == pytest.approx(base, rel=1e-5)
    c = torch.linspace(0.5, 3.0, 6, dtype=torch.float64)                    # per class (columns)
    d = torch.linspace(-1.0, 1.0, 6, dtype=torch.float64)
    intra = intra_class_relation(y_s, y_t).item()
    assert intra_class_relation(c * y_s + d, y_t).item() == pytest.approx(intra, rel=1e-5)
    # KL, in contrast, changes under such a map
    kl = lambda p, q: (q * (q / p).log()).sum(1).mean()
    y2 = (2 * y_s + 0.1) / (2 * y_s + 0.1).sum(1, keepdim=True)
    assert abs(kl(y2, y_t) - kl(y_s, y_t)) > 1e-3
    # a negative scale flips the correlation
    assert inter_class_relation(-y_s, y_t).item() == pytest.approx(2 - base, rel=1e-9)


def test_dist_invariant_to_logit_shift_and_row_order():
    g = torch.Generator().manual_seed(3)
    z_s, z_t = torch.randn(8, 5, generator=g), torch.randn(8, 5, generator=g)
    base = DIST(tau=4)(z_s, z_t).item()
    assert DIST(tau=4)(z_s + torch.randn(8, 1, generator=g) * 10, z_t).item() == pytest.approx(base, rel=1e-5)
    perm = torch.randperm(8, generator=g)
    assert DIST(tau=4)(z_s[perm], z_t[perm]).item() == pytest.approx(base, rel=1e-5)


def test_intra_centres_columns_over_the_batch():
    """Reusing the row routine without transposing gives a different (wrong) number."""
    g = torch.Generator().manual_seed(4)
    y_s, y_t = torch.randn(5, 3, generator=g).softmax(1), torch.randn(5, 3, generator=g).softmax(1)
    cols = [losses.pearson_correlation(y_s[:, j][None], y_t[:, j][None]).item() for j in range(3)]
    assert intra_class_relation(y_s, y_t).item() == pytest.approx(1 - sum(cols) / 3, abs=1e-6)
    assert abs(intra_class_relation(y_s, y_t).item() - inter_class_relation(y_s, y_t).item()) > 1e-3


def test_dense_input_flattens_pixels():
    g = torch.Generator().manual_seed(5)
    z_s, z_t = torch.randn(2, 4, 3, 5, generator=g), torch.randn(2, 4, 3, 5, generator=g)
    rows_s = z_s.permute(0, 2, 3, 1).reshape(-1, 4)
    rows_t = z_t.permute(0, 2, 3, 1).reshape(-1, 4)
    expected = DIST()(rows_s, rows_t).item()
    assert DIST()(z_s, z_t).item() == pytest.approx(expected, rel=1e-6)
    # the official (1, 3)-transpose order gives the same value: both terms ignore row order
    official_s, official_t = z_s.transpose(1, 3).reshape(-1, 4), z_t.transpose(1, 3).reshape(-1, 4)
    assert DIST()(official_s, official_t).item() == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError):
        DIST()(torch.randn(2, 3, 4), torch.randn(2, 3, 4))
    with pytest.raises(ValueError):
        DIST()(torch.randn(2, 3), torch.randn(2, 4))


def test_sigmoid_variant():
    g = torch.Generator().manual_seed(6)
    z_s, z_t = torch.randn(4, 6, generator=g), torch.randn(4, 6, generator=g)
    y_s, y_t = z_s.sigmoid(), z_t.sigmoid()
    expected = 2.0 * (inter_class_relation(y_s, y_t) + 0.5 * intra_class_relation(y_s, y_t))
    loss = DIST(beta=1, gamma=0.5, use_sigmoid=True, loss_weight=2.0)(z_s, z_t)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_kl_divergence_by_hand():
    z_s = torch.tensor([[1.0, 2.0, 0.0], [0.5, -1.0, 1.0]])
    z_t = torch.tensor([[2.0, 1.0, 0.0], [0.0, 0.0, 3.0]])
    for tau in (1.0, 4.0):
        total = 0.0
        for zs, zt in zip(z_s.tolist(), z_t.tolist()):
            ps = [math.exp(v / tau) for v in zs]
            pt = [math.exp(v / tau) for v in zt]
            ps, pt = [v / sum(ps) for v in ps], [v / sum(pt) for v in pt]
            total += sum(q * math.log(q / p) for p, q in zip(ps, pt))
        assert KLDivergence(tau)(z_s, z_t).item() == pytest.approx(tau ** 2 * total / 2, rel=1e-5)


def test_parse_kd_method():
    assert losses.parse_kd_method('') is None
    kd = losses.parse_kd_method('kd')
    assert isinstance(kd, KLDivergence) and kd.tau == 4
    assert losses.parse_kd_method('kdt2').tau == 2.0
    d = losses.parse_kd_method('dist')
    assert isinstance(d, DIST) and d.tau == 1 and d.beta == 1 and d.gamma == 1
    assert losses.parse_kd_method('dist_t4').tau == 4.0
    assert losses.parse_kd_method('dist_t0.5').tau == 0.5
    for bad in ('dist_t', 'kdt', 'mse', 'DIST', 'dist4'):
        with pytest.raises(ValueError):
            losses.parse_kd_method(bad)


def test_chunked_averages_per_chunk_losses():
    g = torch.Generator().manual_seed(7)
    z_s, z_t = torch.randn(8, 5, generator=g), torch.randn(8, 5, generator=g)
    loss = DIST()
    parts = [loss(z_s[:4], z_t[:4]), loss(z_s[4:], z_t[4:])]
    assert chunked(loss, z_s, z_t, 4).item() == pytest.approx(((parts[0] + parts[1]) / 2).item(), rel=1e-6)
    assert chunked(loss, z_s, z_t, 0).item() == pytest.approx(loss(z_s, z_t).item(), rel=1e-6)
    # the intra-class statistics depend on the batch: chunking changes the value
    assert abs(chunked(loss, z_s, z_t, 4).item() - loss(z_s, z_t).item()) > 1e-4


class _Counter(torch.nn.Module):
    def __init__(self, seed):
        super().__init__()
        torch.manual_seed(seed)
        self.bn = torch.nn.BatchNorm1d(6)
        self.fc = torch.nn.Linear(6, 4)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.fc(self.bn(x))


def test_kd_loss_wrapper():
    student, teacher = _Counter(0), _Counter(1)
    teacher.train()
    crit = KDLoss(student, teacher, torch.nn.CrossEntropyLoss(), 'dist_t4', ori_loss_weight=1.0, kd_loss_weight=2.0)
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    x, y = torch.randn(8, 6), torch.randint(0, 4, (8,))
    teacher.train()                         # e.g. a stray model.train(): the wrapper puts it back to eval
    running = teacher.bn.running_mean.clone()
    loss = crit(x, y)
    assert student.calls == 1 and teacher.calls == 1
    assert not teacher.training and torch.equal(teacher.bn.running_mean, running)   # BN statistics untouched
    with torch.no_grad():
        student.eval(), teacher.eval()
        logits, logits_t = student.fc(student.bn(x)), teacher(x)
    expected = F.cross_entropy(crit.logits, y) + 2.0 * DIST(tau=4)(crit.logits, logits_t)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert crit.ori_loss_value.item() == pytest.approx(F.cross_entropy(crit.logits, y).item(), rel=1e-6)
    loss.backward()
    assert student.fc.weight.grad is not None and teacher.fc.weight.grad is None


def test_kd_loss_without_teacher_and_errors():
    student = _Counter(0)
    crit = KDLoss(student, None, torch.nn.CrossEntropyLoss(), '', ori_loss_weight=1.0)
    x, y = torch.randn(8, 6), torch.randint(0, 4, (8,))
    assert crit(x, y).item() == pytest.approx(F.cross_entropy(crit.logits, y).item(), rel=1e-6)
    assert crit.kd_loss_value.item() == 0
    with pytest.raises(ValueError):
        KDLoss(student, None, torch.nn.CrossEntropyLoss(), 'dist')
    with pytest.raises(ValueError):
        KDLoss(student, _Counter(1), torch.nn.CrossEntropyLoss(), 'nope')


def test_label_smoothing_matches_official_formula():
    logits, y = torch.randn(5, 7), torch.randint(0, 7, (5,))
    eps = 0.1
    target = (1 - eps) * F.one_hot(y, 7) + eps / 7
    official = (-target * logits.log_softmax(1)).mean(0).sum()
    assert torch.nn.CrossEntropyLoss(label_smoothing=eps)(logits, y).item() == pytest.approx(official.item(), rel=1e-6)
