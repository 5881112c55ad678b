"""Both contrastive losses and the total loss against hand computations on tiny features."""
import math

import pytest
import torch

from losses import IPTLoss, PatchContrastiveLoss, SupConLoss

# B = 2 images x N = 2 patches, D = 2; already unit length except the last (normalised by the losses)
FEATS = torch.tensor([[[1.0, 0.0], [0.6, 0.8]],
                      [[0.0, 1.0], [-3.0, -4.0]]])


def unit(v):
    n = math.sqrt(sum(x * x for x in v))
    return [x / n for x in v]


def dot(a, b):
    return sum(x * y for x, y in zip(a, b))


def hand_supcon(feats, tau, base):
    z = [unit(v) for img in feats.tolist() for v in img]
    lab = [j for j, img in enumerate(feats.tolist()) for _ in img]
    total = 0.0
    for a in range(len(z)):
        others = [b for b in range(len(z)) if b != a]
        m = max(dot(z[a], z[b]) / tau for b in range(len(z)))  # row max (includes self)
        denom = sum(math.exp(dot(z[a], z[b]) / tau - m) for b in others)
        pos = [p for p in others if lab[p] == lab[a]]
        mean_lp = sum(dot(z[a], z[p]) / tau - m - math.log(denom + 1e-8) for p in pos) / len(pos)
        total += -(tau / base) * mean_lp
    return total / len(z)


def hand_paper(feats, tau):
    f = [[unit(v) for v in img] for img in feats.tolist()]
    b, n = len(f), len(f[0])
    total = 0.0
    for j in range(b):
        for i1 in range(n):
            for i2 in range(n):
                num = math.exp(dot(f[j][i1], f[j][i2]) / tau)
                den = sum(math.exp(dot(f[j][i1], f[k][i2]) / tau) for k in range(b) if k != j)
                total += -math.log(num / den)
    return total / (b * n * n)


@pytest.mark.parametrize('tau,base', [(0.07, 0.07), (0.5, 0.07), (1.0, 1.0)])
def test_supcon_hand(tau, base):
    got = SupConLoss(tau, base_temperature=base)(FEATS)
    assert got.item() == pytest.approx(hand_supcon(FEATS, tau, base), rel=1e-5)


@pytest.mark.parametrize('tau', [0.07, 0.5, 1.0])
def test_paper_hand(tau):
    got = PatchContrastiveLoss(tau)(FEATS)
    assert got.item() == pytest.approx(hand_paper(FEATS, tau), rel=1e-5, abs=1e-5)


def test_random_features_three_images():
    torch.manual_seed(0)
    f = torch.randn(3, 4, 5)
    assert SupConLoss(0.3)(f).item() == pytest.approx(hand_supcon(f, 0.3, 0.07), rel=1e-4)
    assert PatchContrastiveLoss(0.3)(f).item() == pytest.approx(hand_paper(f, 0.3), rel=1e-4)


def test_losses_prefer_image_clusters():
    """Patches clustered by image give a lower loss than patches mixed across images."""
    torch.manual_seed(0)
    centres = torch.randn(4, 1, 16) * 3
    clustered = centres + 0.1 * torch.randn(4, 8, 16)
    mixed = clustered.reshape(32, 16)[torch.randperm(32)].reshape(4, 8, 16)
    for loss in (SupConLoss(0.5), PatchContrastiveLoss(0.5)):
        assert loss(clustered) < loss(mixed)


def test_gradients_flow_and_batch_checks():
    f = torch.randn(2, 3, 4, requires_grad=True)
    (SupConLoss()(f) + PatchContrastiveLoss()(f)).backward()
    assert f.grad is not None and torch.isfinite(f.grad).all() and f.grad.abs().sum() > 0
    for loss in (SupConLoss(), PatchContrastiveLoss()):
        with pytest.raises(ValueError, match='at least 2 images'):
            loss(torch.randn(1, 3, 4))
        with pytest.raises(ValueError, match=r'\[B, N, D\]'):
            loss(torch.randn(6, 4))


def test_total_loss():
    torch.manual_seed(0)
    sr, hr, tok = torch.rand(2, 3, 4, 4) * 255, torch.rand(2, 3, 4, 4) * 255, torch.randn(2, 5, 6)
    l1 = (sr - hr).abs().mean()
    assert IPTLoss(con=None)(sr, hr).item() == pytest.approx(l1.item())
    assert IPTLoss(0.1, 'supcon')(sr, hr, tok).item() == pytest.approx((l1 + 0.1 * SupConLoss()(tok)).item(), rel=1e-6)
    assert IPTLoss(0.3, 'paper')(sr, hr, tok).item() == pytest.approx(
        (l1 + 0.3 * PatchContrastiveLoss()(tok)).item(), rel=1e-6)
    with pytest.raises(ValueError, match='tokens'):
        IPTLoss(0.1, 'supcon')(sr, hr)
    with pytest.raises(ValueError, match='con must be'):
        IPTLoss(0.1, 'infonce')
