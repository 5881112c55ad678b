"""SimMatch's pseudo-labels and objective, as pure functions of tensors (no distributed code, no state).

Notation (paper / official code):
  p      class prediction of the teacher on the weak view,        ``prob_u_w``      [B, L]
  p~     p after distribution alignment (DA)
  q^w    instance similarity of the weak view to the labeled bank, ``teacher_prob_orig`` [B, K]
  q^s    instance similarity of the strong view (student, with gradient)
  q^     calibrated instance target (unfolding),                  ``teacher_prob``  [B, K]
  a      aggregated instance similarity per class (aggregation),  ``aggregated_prob`` [B, L]
  p^     calibrated pseudo-label,                                 ``pseudo_label``  [B, L]
The bank is ``[d, K]`` with one unit-norm column per labeled image and ``bank_labels`` ``[K]``.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ['distribution_alignment', 'unfold', 'aggregate', 'simmatch_targets', 'instance_loss', 'semantic_loss',
           'bank_update', 'SimMatchLoss', 'AGGREGATIONS']

AGGREGATIONS = ('mix', 'product')


@torch.no_grad()
def distribution_alignment(probs, queue, ptr, batch_mean=None):
    """DA with a queue of batch means: ``Q[ptr] <- mean_b p`` (or ``batch_mean``, the all-reduced mean in DDP),
    ``ptr <- (ptr + 1) mod len(Q)``, then ``p~ = normalize_rows(p / mean_rows(Q))``.

    The current batch is written *before* the queue mean is taken. Returns ``(p~, new_queue, new_ptr)``; the
    inputs are not modified.
    """
    queue = queue.clone()
    ptr = int(ptr)
    queue[ptr] = probs.mean(0) if batch_mean is None else batch_mean
    ptr = (ptr + 1) % queue.shape[0]
    aligned = probs / queue.mean(0)
    aligned = aligned / aligned.sum(dim=1, keepdim=True)
    return aligned, queue, ptr


def unfold(prob, bank_labels):
    """Unfolding: give every bank slot ``j`` the class probability of its label, ``f[b, j] = p~[b, labels_j]``."""
    return prob.gather(1, bank_labels.expand(prob.shape[0], -1))


def aggregate(instance_prob, bank_labels, num_classes):
    """Aggregation: ``a[b, c] = sum_{j: labels_j = c} q^w[b, j]`` (scatter-add over the bank)."""
    out = instance_prob.new_zeros(instance_prob.shape[0], num_classes)
    return out.scatter_add(1, bank_labels.expand(instance_prob.shape[0], -1), instance_prob)


@torch.no_grad()
def simmatch_targets(prob_u_w, feat_u_w, bank, bank_labels, num_classes, tt=0.1, c_smooth=0.9, aggregation='mix'):
    """The calibrated targets of SimMatch from the weak view.

    * ``q^w = softmax(z_w . bank / t_t)``;
    * unfolding: ``q^ = q^w * f / sum_j(q^w * f)`` with ``f = unfold(p~)``;
    * aggregation ``a = aggregate(q^w)`` and the pseudo-label
      ``aggregation='mix'`` (official code, default): ``p^ = c_smooth * p~ + (1 - c_smooth) * a`` (``p~`` when
      ``c_smooth >= 1``); ``aggregation='product'`` (paper's scale-and-renormalise): ``p^ = p~ * a / sum(p~ * a)``.

    Returns a dict with ``pseudo_label``, ``teacher_prob`` (q^), ``teacher_prob_orig`` (q^w),
    ``aggregated_prob`` (a) and ``factor`` (f).
    """
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got '{aggregation}'")
    teacher_prob_orig = F.softmax(feat_u_w @ bank / tt, dim=1)
    factor = unfold(prob_u_w, bank_labels)
    teacher_prob = teacher_prob_orig * factor
    teacher_prob = teacher_prob / teacher_prob.sum(dim=1, keepdim=True)
    aggregated_prob = aggregate(teacher_prob_orig, bank_labels, num_classes)
    if aggregation == 'product':
        pseudo_label = prob_u_w * aggregated_prob
        pseudo_label = pseudo_label / pseudo_label.sum(dim=1, keepdim=True)
    elif c_smooth < 1:
        pseudo_label = c_smooth * prob_u_w + (1 - c_smooth) * aggregated_prob
    else:
        pseudo_label = prob_u_w
    return {'pseudo_label': pseudo_label, 'teacher_prob': teacher_prob, 'teacher_prob_orig': teacher_prob_orig,
            'aggregated_prob': aggregated_prob, 'factor': factor}


def instance_loss(feat_u_s, bank, teacher_prob, st=0.1):
    """Instance consistency, one value per sample: ``L_in[b] = -sum_j q^[b, j] log softmax_j(z_s . bank / t_s)``.

    No confidence mask; the target ``q^`` and the bank are constants, the gradient reaches ``feat_u_s`` only.
    """
    log_q_s = F.log_softmax(feat_u_s @ bank.detach() / st, dim=1)
    return -(teacher_prob.detach() * log_q_s).sum(dim=1)


def semantic_loss(logits_u_s, pseudo_label, threshold):
    """Class-level consistency with the *soft* calibrated target and a confidence mask on ``max_c p^``:
    ``L_u = mean_b 1[max p^_b >= tau] * (-sum_c p^_bc log softmax(logits_u_s)_bc)`` (mean over the whole batch).

    Returns ``(loss, mask)`` with ``mask`` a float ``[B]`` tensor.
    """
    pseudo_label = pseudo_label.detach()
    mask = pseudo_label.max(dim=1).values.ge(threshold).float()
    per_sample = -(pseudo_label * F.log_softmax(logits_u_s, dim=1)).sum(dim=1)
    return (per_sample * mask).mean(), mask


@torch.no_grad()
def bank_update(bank, bank_labels, k, labels, index, bank_m=None, norm_dim=0):
    """Write the labeled embeddings ``k`` ``[B, d]`` into the bank slots ``index``; returns ``(bank, labels)``.

    ``bank_m=None`` (ImageNet): overwrite, ``bank[:, idx] = k^T``. ``bank_m=m`` (CIFAR/USB):
    ``bank[:, idx] = normalize(m * bank[:, idx] + (1 - m) * k^T, dim=norm_dim)``; ``norm_dim=0`` normalises each
    column (our default, the fix), ``norm_dim=1`` normalises each row across the batch slice as USB does (the
    columns are then not unit vectors). Slots repeated in ``index`` are written in unspecified order.
    """
    bank, bank_labels = bank.clone(), bank_labels.clone()
    k = k.detach().to(bank.dtype)
    if bank_m is None:
        bank[:, index] = k.t()
    else:
        bank[:, index] = F.normalize(bank_m * bank[:, index] + (1 - bank_m) * k.t(), dim=norm_dim)
    bank_labels[index] = labels
    return bank, bank_labels


class SimMatchLoss(nn.Module):
    """``L = L_s + lambda_u * L_u + lambda_in * L_in`` (official ``simmatch.py``).

    ``forward(logits_x, targets_x, logits_u_s, pseudo_label, loss_in)`` takes the per-sample instance loss
    (``SimMatch.forward``'s last output, ``[muB]`` or a scalar 0) and averages it. Returns ``(loss, stats)``.
    """

    def __init__(self, lambda_u=10., lambda_in=5., threshold=0.7):
        super().__init__()
        self.lambda_u, self.lambda_in, self.threshold = float(lambda_u), float(lambda_in), float(threshold)

    def forward(self, logits_x, targets_x, logits_u_s, pseudo_label, loss_in):
        loss_x = F.cross_entropy(logits_x, targets_x)
        loss_u, mask = semantic_loss(logits_u_s, pseudo_label, self.threshold)
        loss_in = loss_in.mean()
        loss = loss_x + self.lambda_u * loss_u + self.lambda_in * loss_in
        stats = {'loss': loss.detach(), 'loss_x': loss_x.detach(), 'loss_u': loss_u.detach(),
                 'loss_in': loss_in.detach(), 'mask': mask.mean()}
        return loss, stats

    def extra_repr(self):
        return f'lambda_u={self.lambda_u}, lambda_in={self.lambda_in}, threshold={self.threshold}'
