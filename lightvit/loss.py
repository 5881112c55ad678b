"""The training objective: soft-target cross-entropy (torch only)."""
import torch.nn.functional as F


def soft_target_cross_entropy(logits, target):
    """mean_b sum_k -target[b, k] * log_softmax(logits)[b, k] for soft targets [B, K]."""
    return (-target * F.log_softmax(logits, dim=-1)).sum(dim=-1).mean()
