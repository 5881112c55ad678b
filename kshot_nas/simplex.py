"""Simplex-net: maps the encoding of a path to its simplex code lam(alpha) on the (K-1)-simplex.

Operation branch (the authors' ``Structure_blocks``): Linear(L*|O|, L*|O| // r) -> ReLU -> Linear(., K) ->
softmax.  With channel search a width branch is added before the ReLU:
``z = ReLU(A_op e_op + b_op + A_ch e_ch + b_ch)``, ``lam = softmax(B z + b)`` (fusion: ours).
With ``per_layer=True`` the last Linear emits L + 1 codes (fixed parts, then one per layer), each softmaxed.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F


def encode_arch(arch, num_ops):
    """One-hot over the ops of every layer, concatenated layer-major: ``[L * num_ops]`` (``[B, ...]`` for a list of
    paths)."""
    if len(arch) and isinstance(arch[0], (list, tuple)):
        return torch.stack([encode_arch(a, num_ops) for a in arch])
    idx = torch.as_tensor(list(arch), dtype=torch.long)
    if idx.numel() and (idx.min() < 0 or idx.max() >= num_ops):
        raise ValueError(f'op indices must lie in [0, {num_ops}), got {list(arch)}')
    return F.one_hot(idx, num_ops).float().flatten()


def encode_widths(widths, choices):
    """One-hot over the width choices of every layer, concatenated layer-major."""
    if len(widths) and isinstance(widths[0], (list, tuple)):
        return torch.stack([encode_widths(w, choices) for w in widths])
    choices = list(choices)
    try:
        idx = [choices.index(w) for w in widths]
    except ValueError:
        raise ValueError(f'widths {list(widths)} are not all in {choices}') from None
    return F.one_hot(torch.tensor(idx, dtype=torch.long), len(choices)).float().flatten()


class SimplexNet(nn.Module):
    def __init__(self, num_layers=21, num_ops=13, K=3, reduction=4, num_widths=None, per_layer=False):
        super().__init__()
        self.num_layers, self.num_ops, self.K, self.per_layer = num_layers, num_ops, K, per_layer
        in_dim = num_layers * num_ops
        hidden = max(1, in_dim // reduction)
        self.fc1 = nn.Linear(in_dim, hidden)
        self.fc1_ch = nn.Linear(num_layers * num_widths, hidden) if num_widths else None
        self.fc2 = nn.Linear(hidden, K * (num_layers + 1 if per_layer else 1))

    def forward(self, arch_onehot, width_onehot=None):
        """``[B, L*|O|]`` (and ``[B, L*|W|]``) -> codes ``[B, K]`` (``[B, L+1, K]`` per layer); rows sum to 1."""
        squeeze = arch_onehot.dim() == 1
        if squeeze:
            arch_onehot = arch_onehot[None]
            width_onehot = None if width_onehot is None else width_onehot[None]
        z = self.fc1(arch_onehot)
        if self.fc1_ch is not None:
            if width_onehot is None:
                raise ValueError('this simplex-net has a width branch: pass width_onehot')
            z = z + self.fc1_ch(width_onehot)
        logits = self.fc2(F.relu(z))
        if self.per_layer:
            logits = logits.view(logits.shape[0], self.num_layers + 1, self.K)
        lam = logits.softmax(-1)
        return lam[0] if squeeze else lam


Structure_blocks = SimplexNet


def code_distinction_reg(lams, widths):
    """R = -(1/|P|) sum_{(i,j) in P} ||lam_i - lam_j||^2 over the pairs P of paths with different widths
    (pushes the codes of different widths apart; the form is ours).  0 when no pair differs."""
    lams = lams.flatten(1)
    keys = [tuple(w) for w in widths]
    pairs = [(i, j) for i in range(len(keys)) for j in range(i + 1, len(keys)) if keys[i] != keys[j]]
    if not pairs:
        return lams.sum() * 0.0
    i, j = (torch.tensor(v, device=lams.device) for v in zip(*pairs))
    return -((lams[i] - lams[j]) ** 2).sum(1).mean()
