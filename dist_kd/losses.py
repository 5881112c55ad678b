"""DIST: Knowledge Distillation from A Stronger Teacher (Huang et al., NeurIPS 2022).

The loss replaces the exact KL match of classic KD by a *relational* match: the student has to keep
the linear correlation of the teacher's probabilities

* across the classes of each instance (inter-class relation, one correlation per row), and
* across the instances of the batch for each class (intra-class relation, one correlation per column).

Names, arguments and numerics follow the official ``lib/models/losses/dist_kd.py`` of
hunto/image_classification_sota (including the ``tau ** 2`` factor of the released code, which the
paper's appendix pseudo-code omits) and the dense ``DIST(beta, gamma, use_sigmoid, loss_weight)`` of the
official detection / segmentation code.

This module imports torch only: copy it into any project.
"""
import re

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ['cosine_similarity', 'pearson_correlation', 'inter_class_relation', 'intra_class_relation',
           'DIST', 'KLDivergence', 'KDLoss', 'parse_kd_method', 'chunked']


def cosine_similarity(a, b, eps=1e-8):
    """Row-wise cosine similarity ``sum_k a_k b_k / (||a|| ||b|| + eps)``: eps is added to the product of
    the two norms (not per norm, not under a square root), as in the official code."""
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + eps)


def pearson_correlation(a, b, eps=1e-8):
    """Row-wise Pearson correlation: the cosine similarity of the rows centred on their own mean."""
    return cosine_similarity(a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True), eps)


def inter_class_relation(y_s, y_t):
    """L_inter = 1 - (1/B) sum_i rho(Y_s[i, :], Y_t[i, :])   (one correlation per instance over its C classes)."""
    return 1 - pearson_correlation(y_s, y_t).mean()


def intra_class_relation(y_s, y_t):
    """L_intra = 1 - (1/C) sum_j rho(Y_s[:, j], Y_t[:, j])   (one correlation per class over the B instances).

    The probabilities are transposed *after* the softmax over classes, so each column is centred over the batch.
    """
    return inter_class_relation(y_s.transpose(0, 1), y_t.transpose(0, 1))


def _flatten_dense(z):
    """(N, K, H, W) -> (N*H*W, K): one row per pixel, the channel axis as the 'class' axis."""
    if z.dim() == 2:
        return z
    if z.dim() != 4:
        raise ValueError(f'DIST expects logits of shape (B, C) or (N, C, H, W), got {tuple(z.shape)}')
    return z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])


class DIST(nn.Module):
    """L = loss_weight * tau^2 * (beta * L_inter + gamma * L_intra) on Y = softmax(Z / tau) (or sigmoid(Z / tau)).

    Args:
        beta: weight of the inter-class relation.
        gamma: weight of the intra-class relation.
        tau: temperature; both terms are multiplied by tau^2 as in the official classification code.
        use_sigmoid: per-class sigmoid instead of the softmax (the official RetinaNet variant).
        loss_weight: global weight (the mmrazor/segmentation interface).

    ``forward(z_s, z_t)`` takes logits of shape (B, C) or dense logits (N, C, H, W) (every pixel becomes a
    row). The teacher logits are detached.
    """

    def __init__(self, beta=1.0, gamma=1.0, tau=1.0, use_sigmoid=False, loss_weight=1.0):
        super().__init__()
        self.beta = beta
        self.gamma = gamma
        self.tau = tau
        self.use_sigmoid = use_sigmoid
        self.loss_weight = loss_weight

    def probabilities(self, z):
        z = _flatten_dense(z) / self.tau
        return z.sigmoid() if self.use_sigmoid else z.softmax(dim=1)

    def forward(self, z_s, z_t):
        if z_s.shape != z_t.shape:
            raise ValueError(f'student and teacher logits differ in shape: {tuple(z_s.shape)} vs {tuple(z_t.shape)}')
        y_s = self.probabilities(z_s)
        y_t = self.probabilities(z_t.detach())
        inter_loss = self.tau ** 2 * inter_class_relation(y_s, y_t)
        intra_loss = self.tau ** 2 * intra_class_relation(y_s, y_t)
        return self.loss_weight * (self.beta * inter_loss + self.gamma * intra_loss)

    def extra_repr(self):
        return (f'beta={self.beta}, gamma={self.gamma}, tau={self.tau}, use_sigmoid={self.use_sigmoid}, '
                f'loss_weight={self.loss_weight}')


class KLDivergence(nn.Module):
    """Classic KD (Hinton et al.): tau^2 * KL(softmax(z_t / tau) || softmax(z_s / tau)), teacher detached."""

    def __init__(self, tau=1.0, reduction='batchmean'):
        super().__init__()
        if reduction not in ('none', 'batchmean', 'sum', 'mean'):
            raise ValueError(f'unknown reduction {reduction!r}')
        self.tau = tau
        self.reduction = reduction

    def forward(self, z_s, z_t):
        log_p_s = F.log_softmax(z_s / self.tau, dim=1)
        p_t = F.softmax(z_t.detach() / self.tau, dim=1)
        return self.tau ** 2 * F.kl_div(log_p_s, p_t, reduction=self.reduction)

    def extra_repr(self):
        return f'tau={self.tau}, reduction={self.reduction!r}'


def parse_kd_method(kd_method):
    """Map an official ``kd`` string to a loss module, or ``None`` for '' (no distillation).

    ``kd`` -> KL with tau = 4; ``kdt<tau>`` -> KL with that tau; ``dist`` -> DIST with tau = 1;
    ``dist_t<tau>`` -> DIST with that tau (``dist_t4`` is the CIFAR-100 setting).
    """
    if kd_method in ('', None):
        return None
    if kd_method == 'kd':
        return KLDivergence(tau=4)
    if kd_method == 'dist':
        return DIST(beta=1, gamma=1, tau=1)
    number = r'(\d+(?:\.\d*)?|\.\d+)'
    m = re.fullmatch(r'kdt' + number, kd_method)
    if m:
        return KLDivergence(tau=float(m.group(1)))
    m = re.fullmatch(r'dist_t' + number, kd_method)
    if m:
        return DIST(beta=1, gamma=1, tau=float(m.group(1)))
    raise ValueError(f"unknown kd method {kd_method!r}: expected '', 'kd', 'kdt<tau>', 'dist' or 'dist_t<tau>'")


def chunked(loss_fn, z_s, z_t, chunk_size=0):
    """Average of ``loss_fn`` over consecutive chunks of ``chunk_size`` rows (0 or >= batch: one chunk).

    The official runs compute DIST on the per-GPU batch without gathering (the intra-class term sees 32
    instances for B1, 96 for B2); a one-device run that emulates them splits its batch the same way.
    """
    if chunk_size <= 0 or chunk_size >= z_s.shape[0]:
        return loss_fn(z_s, z_t)
    losses = [loss_fn(s, t) for s, t in zip(z_s.split(chunk_size), z_t.split(chunk_size))]
    return torch.stack(losses).mean()


class KDLoss:
    """The official distillation wrapper: ``loss = ori_loss_weight * ori_loss(student(x), y)
    + kd_loss_weight * kd(student(x), teacher(x))``, called as ``loss_fn(x, targets)``.

    The teacher runs in eval mode under ``no_grad``; the student runs once and its logits feed both terms.
    ``kd_method=''`` trains the student alone (``ori_loss_weight * ori_loss``; the teacher may be None).
    The last values are kept for logging: ``ori_loss_value``, ``kd_loss_value`` (detached tensors) and
    ``logits`` (the student's detached logits).

    Args:
        student: the student (possibly DDP-wrapped).
        teacher: the frozen teacher (nn.Module) or None when ``kd_method == ''``.
        ori_loss: the task loss on (logits, targets), e.g. ``nn.CrossEntropyLoss()``.
        kd_method: '', 'kd', 'kdt<tau>', 'dist', 'dist_t<tau>'.
        chunk_size: compute the KD term per chunk of this many instances and average (0: whole batch).
    """

    def __init__(self, student, teacher, ori_loss, kd_method='dist', ori_loss_weight=1.0, kd_loss_weight=1.0,
                 chunk_size=0):
        self.student = student
        self.teacher = teacher
        self.ori_loss = ori_loss
        self.kd_method = kd_method
        self.ori_loss_weight = ori_loss_weight
        self.kd_loss_weight = kd_loss_weight
        self.chunk_size = chunk_size
        self.kd_loss = parse_kd_method(kd_method)
        if self.kd_loss is not None:
            if teacher is None:
                raise ValueError(f'kd method {kd_method!r} needs a teacher')
            teacher.eval()
            for p in teacher.parameters():
                p.requires_grad_(False)
        self.ori_loss_value = self.kd_loss_value = self.logits = None

    def __call__(self, x, targets):
        if self.kd_loss is not None:        # 1. teacher, frozen, in eval mode
            if self.teacher.training:       # keep it so whatever model.train() calls happened
                self.teacher.eval()
            with torch.no_grad():
                logits_t = self.teacher(x)
        logits = self.student(x)            # 2. one student forward for both terms
        ori_loss = self.ori_loss(logits, targets)
        loss = self.ori_loss_weight * ori_loss
        if self.kd_loss is not None:
            kd_loss = chunked(self.kd_loss, logits.float(), logits_t.float(), self.chunk_size)
            loss = loss + self.kd_loss_weight * kd_loss
            self.kd_loss_value = kd_loss.detach()
        else:
            self.kd_loss_value = torch.zeros((), device=logits.device)
        self.ori_loss_value = ori_loss.detach()
        self.logits = logits.detach()
        return loss
