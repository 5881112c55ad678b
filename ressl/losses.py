"""ReSSL objectives.  Imports only torch.

Notation of the paper: ``z`` student embedding of the strong view, ``k`` teacher embedding of the weak view,
``m_j`` the queue columns, ``tau_s`` / ``tau_t`` the student / teacher temperatures.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F


def relation_loss(logits_q, logits_k, tau_s=0.1, tau_t=0.04):
    """Relation loss, eq. (4)-(6) of the NeurIPS paper.

    ``p_i = softmax(z_i . M / tau_s)`` (student), ``q_i = softmax(k_i . M / tau_t)`` (teacher, detached);
    ``L = mean_i sum_j -q_i(j) log p_i(j)`` = KL(q || p) + H(q), with H(q) a constant for the student.
    ``tau_t < tau_s`` sharpens the target.
    """
    target = F.softmax(logits_k.detach() / tau_t, dim=1)
    return -(target * F.log_softmax(logits_q / tau_s, dim=1)).sum(dim=1).mean()


class ReSSLLoss(nn.Module):
    """Module form of :func:`relation_loss` holding the two temperatures."""

    def __init__(self, tau_s=0.1, tau_t=0.04):
        super().__init__()
        self.tau_s = tau_s
        self.tau_t = tau_t

    def forward(self, logits_q, logits_k):
        return relation_loss(logits_q, logits_k, self.tau_s, self.tau_t)

    def extra_repr(self):
        return f'tau_s={self.tau_s}, tau_t={self.tau_t}'


def infonce_from_logits(l_pos, l_neg, tau=0.1):
    """InfoNCE with one positive logit per row (``l_pos``: [N]) and the queue logits (``l_neg``: [N, K])."""
    logits = torch.cat([l_pos.unsqueeze(1), l_neg], dim=1) / tau
    labels = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits, labels)


def infonce_loss(q, k, queue, tau=0.1):
    """InfoNCE warm-up of the extended version (arXiv 2203.08717), reconstructed from its description.

    ``-log( e^{z_i.k_i/tau} / (e^{z_i.k_i/tau} + sum_j e^{z_i.m_j/tau}) )``: the teacher's weak-view embedding
    ``k_i`` (detached) is the positive, the queue columns the negatives.  ``q``, ``k``: [N, D]; ``queue``: [D, K].
    """
    k = k.detach()
    return infonce_from_logits((q * k).sum(dim=1), q @ queue.detach(), tau)


@torch.no_grad()
def teacher_entropy(logits_k, tau_t=0.04):
    """Mean entropy (nats) of the teacher relation ``softmax(k . M / tau_t)``: a monitor of target sharpness."""
    logp = F.log_softmax(logits_k / tau_t, dim=1)
    return -(logp.exp() * logp).sum(dim=1).mean()
