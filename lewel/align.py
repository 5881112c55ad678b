"""The LEWEL alignment: per-pixel projections -> alignment maps -> aligned features.  Imports only torch.

Notation of the spec card: ``x`` is the flattened backbone map y (b x C x HW), ``s`` the per-pixel projections
g(y) (b x D x HW).  With N_h heads:

    s_hat(p)  = s(p) / ||s(p)||_2                  (over all D channels of pixel p, before any split)
    A_k(p)    = exp(s_hat_k(p) / scale) / sum_p' exp(s_hat_k(p') / scale)     (softmax over positions)
    F[h*C/N_h + c, j] = sum_p x[h*C/N_h + c, p] * A_{h*D/N_h + j}(p)

i.e. the D maps and the C channels are both split into N_h groups (order kept) and head h re-pools only its
own channel group with its own D/N_h maps, giving D/N_h aligned features of C dimensions per image.
"""
import torch
import torch.nn.functional as F


def alignment_maps(s, num_heads, scale=1.0, l2_norm=True):
    """Alignment maps ``[b, num_heads, D/num_heads, HW]`` from per-pixel projections ``s`` ``[b, D, HW]``.

    Every map is a distribution over the HW positions (non-negative, sums to one).
    """
    b, d, hw = s.shape
    if d % num_heads:
        raise ValueError(f'projection dim {d} is not divisible by num_heads={num_heads}')
    if l2_norm:
        s = F.normalize(s, dim=1)
    s = s / scale
    return F.softmax(s, dim=2).view(b, num_heads, d // num_heads, hw)


def aggregate(x, maps):
    """Aligned features ``[b, C, D/N_h]``: head h pools channel group h of ``x`` ``[b, C, HW]`` with its maps."""
    b, c, hw = x.shape
    num_heads, per_head = maps.shape[1], maps.shape[2]
    if c % num_heads:
        raise ValueError(f'backbone channels {c} are not divisible by num_heads={num_heads}')
    x = x.view(b, num_heads, c // num_heads, hw)
    feats = torch.matmul(x, maps.transpose(3, 2))        # [b, N_h, C/N_h, D/N_h]
    return feats.reshape(b, c, per_head)


def lewel_align(x, s, num_heads, scale=1.0, l2_norm=True):
    """``(aligned_feats [b, C, D/num_heads], maps [b, num_heads, D/num_heads, HW])`` (pure function)."""
    if x.shape[0] != s.shape[0] or x.shape[2] != s.shape[2]:
        raise ValueError(f'x {tuple(x.shape)} and s {tuple(s.shape)} must share batch and positions')
    maps = alignment_maps(s, num_heads, scale, l2_norm)
    return aggregate(x, maps), maps
