"""IPT objectives: L1 reconstruction plus a contrastive loss on the body's output patch features.

Positives are patches of the same image, negatives patches of the other images in the batch (B >= 2).
Two forms: ``SupConLoss`` (the MindSpore port's ``SupConLoss``, the default) and ``PatchContrastiveLoss``
(the paper's Eq. 6).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F


def _check(features):
    if features.dim() != 3:
        raise ValueError(f'features must be [B, N, D], got shape {tuple(features.shape)}')
    if features.size(0) < 2:
        raise ValueError('the contrastive loss needs at least 2 images per batch (negatives come from other images)')


class SupConLoss(nn.Module):
    """Supervised-contrastive form with the image as the label.

    All ``B*N`` L2-normalised tokens are anchors; for anchor ``a`` of image ``j`` the positives ``P(a)`` are the
    other ``N-1`` tokens of image ``j`` and ``log p(a, p) = z_a.z_p / tau - log sum_{b != a} exp(z_a.z_b / tau)``
    (row max subtracted first, ``1e-8`` inside the log as in the official code);
    ``L = mean_a[-(tau / tau_base) mean_{p in P(a)} log p(a, p)]``."""

    def __init__(self, temperature=0.07, contrast_mode='all', base_temperature=0.07):
        super().__init__()
        if contrast_mode != 'all':
            raise ValueError("IPT uses contrast_mode='all' (every token is an anchor)")
        self.temperature, self.contrast_mode, self.base_temperature = temperature, contrast_mode, base_temperature

    def forward(self, features):
        _check(features)
        b, n, _ = features.shape
        z = F.normalize(features.float().reshape(b * n, -1), dim=1)
        logits = z @ z.t() / self.temperature
        logits = logits - logits.max(dim=1, keepdim=True).values.detach()
        labels = torch.arange(b, device=z.device).repeat_interleave(n)
        not_self = ~torch.eye(b * n, dtype=torch.bool, device=z.device)
        pos = (labels[:, None] == labels[None, :]) & not_self
        exp = torch.exp(logits) * not_self
        log_prob = logits - torch.log(exp.sum(1, keepdim=True) + 1e-8)
        mean_log_prob_pos = (log_prob * pos).sum(1) / pos.sum(1).clamp(min=1)
        return -(self.temperature / self.base_temperature) * mean_log_prob_pos.mean()


class PatchContrastiveLoss(nn.Module):
    """The paper's Eq. 6 with cosine similarity ``d``:

    ``l(i1, i2, j) = -log[exp(d(f^j_i1, f^j_i2) / tau) / sum_{k != j} exp(d(f^j_i1, f^k_i2) / tau)]``,
    ``L = 1 / (B N^2) sum_j sum_i1 sum_i2 l(i1, i2, j)`` (the denominator takes the same position ``i2`` from
    the other images only). Computed one image ``j`` at a time (memory ``N x B x N``)."""

    def __init__(self, temperature=0.07, mode='paper'):
        super().__init__()
        if mode != 'paper':
            raise ValueError("PatchContrastiveLoss implements mode='paper'; use SupConLoss for the official form")
        self.temperature, self.mode = temperature, mode

    def forward(self, features):
        _check(features)
        b, n, _ = features.shape
        z = F.normalize(features.float(), dim=-1)
        others = torch.ones(b, dtype=torch.bool, device=z.device)
        total = z.new_zeros(())
        for j in range(b):
            sim = torch.einsum('id,kjd->ikj', z[j], z) / self.temperature  # [i1, k, i2]
            mask = others.clone()
            mask[j] = False
            neg = torch.logsumexp(sim[:, mask, :], dim=1)  # [i1, i2]
            total = total + (neg - sim[:, j, :]).sum()
        return total / (b * n * n)


class IPTLoss(nn.Module):
    """``L = L1(sr, hr) + lambda_con * L_con(tokens)``; ``con`` in {'supcon', 'paper', None}."""

    def __init__(self, lambda_con=0.1, con='supcon', temperature=0.07):
        super().__init__()
        if con not in ('supcon', 'paper', None, 'none'):
            raise ValueError(f"con must be 'supcon', 'paper' or None, got {con!r}")
        self.lambda_con = lambda_con
        self.con = None if con in (None, 'none') or lambda_con == 0 else (
            SupConLoss(temperature) if con == 'supcon' else PatchContrastiveLoss(temperature))
        self.last = {}

    def forward(self, sr, hr, tokens=None):
        l_sup = F.l1_loss(sr, hr)
        self.last = {'l1': l_sup.detach()}
        if self.con is None:
            return l_sup
        if tokens is None:
            raise ValueError('the contrastive term needs the body tokens (model(..., return_tokens=True))')
        l_con = self.con(tokens)
        self.last['con'] = l_con.detach()
        return l_sup + self.lambda_con * l_con
