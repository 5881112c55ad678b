"""The two objectives of WCL: NT-Xent on head1 (instance discrimination) and the supervised contrastive
loss on head2 with weak labels (``sup_contra``)."""
import torch
import torch.nn.functional as F

__all__ = ['nt_xent_logits', 'sup_contra']


def nt_xent_logits(z1, z2, z_other1=None, z_other2=None, t=0.1):
    """Logits and targets of NT-Xent, laid out as the official code does.

    Rows are the 2n local embeddings ``[z1; z2]``; columns are ``[z1, z2, z_other1, z_other2]`` (the other
    ranks' embeddings, constants) with each row's own column removed, so the logits are 2n x (2N - 1).
    The positive of row i < n (view 1 of image i) is column ``n - 1 + i``; of row n + i it is column ``i``.
    ``F.cross_entropy(logits, labels)`` is then ``L_NCE = -1/2n sum_a log softmax_{c != a}(z_a.z_c / t)[a+]``.
    """
    n = z1.shape[0]
    z = torch.cat([z1, z2], 0)
    cols = [z1, z2] + [o for o in (z_other1, z_other2) if o is not None and o.numel() > 0]
    allz = torch.cat(cols, 0)
    logits = z @ allz.t() / t                                            # 2n x 2N
    self_mask = torch.zeros_like(logits, dtype=torch.bool)
    self_mask[:, :2 * n].fill_diagonal_(True)
    logits = logits[~self_mask].view(2 * n, -1)                          # 2n x (2N - 1)
    idx = torch.arange(n, device=z1.device)
    labels = torch.cat([n - 1 + idx, idx])
    return logits, labels


def sup_contra(logits, mask, diagnal_mask=None):
    """Supervised contrastive loss (Khosla et al.) on precomputed ``logits = u_i . u_c / t``.

    ``mask[i, c] = 1`` marks the positives of anchor i; ``diagnal_mask[i, c] = 0`` removes anchor i itself
    from both the denominator and the positives:
    ``-1/n sum_i 1/|P(i)| sum_{p in P(i)} log( exp(l_ip) / sum_{c != i} exp(l_ic) )``.
    """
    mask = mask.float()
    if diagnal_mask is not None:
        diagnal_mask = diagnal_mask.float()
        mask = mask * diagnal_mask
        exp_logits = torch.exp(logits) * diagnal_mask
    else:
        exp_logits = torch.exp(logits)
    log_prob = logits - torch.log(exp_logits.sum(1, keepdim=True))
    mean_log_prob_pos = (mask * log_prob).sum(1) / mask.sum(1).clamp(min=1e-12)
    return -mean_log_prob_pos.mean()
