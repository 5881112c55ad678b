"""Kernel algebra of the Diverse Branch Block (DBB, Ding et al. CVPR 2021), as used by DyRep.

Every function is pure: it takes kernels/biases (and BN modules for their statistics) and returns new
tensors. Numbering follows the DBB paper's transforms I-VI and IX; DyRep's card, Sec. 3.

Shapes: a conv kernel is ``[C_out, C_in / g, kh, kw]``; a bias is ``[C_out]``.
"""
import torch
import torch.nn.functional as F


def transI_fusebn(kernel, bn, conv_bias=None):
    """(I) Fold a BatchNorm (running statistics, eval form) into the preceding conv.

    ``t = gamma / sqrt(var + eps)``; ``K' = K * t``; ``b' = beta + (b - mu) * t`` (``b = 0`` if absent).
    """
    t = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    bias = -bn.running_mean if conv_bias is None else conv_bias - bn.running_mean
    return kernel * t.reshape(-1, 1, 1, 1), bn.bias + bias * t


def transII_addbranch(kernels, biases):
    """(II) Parallel branches with equal kernel shape add up: sum of kernels, sum of biases."""
    return sum(kernels), sum(biases)


def transIII_1x1_kxk(k1, b1, k2, b2, groups=1):
    """(III) A 1x1 conv ``(k1, b1)`` followed by a kxk conv ``(k2, b2)`` is one kxk conv.

    ``K[o, i] = sum_m K2[o, m] * K1[m, i]`` (per group), ``b[o] = sum_{m,u,v} K2[o, m, u, v] b1[m] + b2[o]``.
    Exact at the borders only if the intermediate map is padded with ``b1`` (what BNAndPad does).
    """
    if groups == 1:
        k = F.conv2d(k2, k1.permute(1, 0, 2, 3))
        b_hat = (k2 * b1.reshape(1, -1, 1, 1)).sum((1, 2, 3))
    else:
        k_slices, b_slices = [], []
        k1_t = k1.permute(1, 0, 2, 3)  # [C_in/g, C_mid, 1, 1]
        k1_group_width = k1.size(0) // groups
        k2_group_width = k2.size(0) // groups
        for g in range(groups):
            k1_t_g = k1_t[:, g * k1_group_width:(g + 1) * k1_group_width, :, :]
            k2_g = k2[g * k2_group_width:(g + 1) * k2_group_width, :, :, :]
            k_slices.append(F.conv2d(k2_g, k1_t_g))
            b1_g = b1[g * k1_group_width:(g + 1) * k1_group_width]
            b_slices.append((k2_g * b1_g.reshape(1, -1, 1, 1)).sum((1, 2, 3)))
        k, b_hat = transIV_depthconcat(k_slices, b_slices)
    return k, b_hat + b2


def transIV_depthconcat(kernels, biases):
    """(IV) Convs on the same input whose outputs are concatenated: concatenate along the output axis."""
    return torch.cat(kernels, dim=0), torch.cat(biases)


def transV_avg(channels, kernel_size, groups, dtype=torch.float32, device=None):
    """(V) kxk average pooling as a (grouped) conv: ``1/k^2`` at ``[o, o mod (C/g)]``, zero elsewhere."""
    input_dim = channels // groups
    k = torch.zeros((channels, input_dim, kernel_size, kernel_size), dtype=dtype, device=device)
    k[torch.arange(channels), torch.arange(channels) % input_dim, :, :] = 1.0 / kernel_size ** 2
    return k


def transVI_multiscale(kernel, target_kernel_size):
    """(VI) Zero-pad a 1x1 / 1xk / kx1 (or smaller kxk) kernel symmetrically to ``target x target``."""
    pad_h = (target_kernel_size - kernel.size(2)) // 2
    pad_w = (target_kernel_size - kernel.size(3)) // 2
    return F.pad(kernel, [pad_w, pad_w, pad_h, pad_h])


def transIX_bn_to_1x1(bn, in_channels, groups=1):
    """(IX) An identity followed by BN as a 3x3 conv: 1 at ``[i, i mod (C/g), 1, 1]``, BN folded in.

    (The official name says 1x1; like the official code it returns a 3x3 kernel, to be zero-padded to kxk
    with :func:`transVI_multiscale`.)
    """
    input_dim = in_channels // groups
    k = torch.zeros((in_channels, input_dim, 3, 3), dtype=bn.weight.dtype, device=bn.weight.device)
    k[torch.arange(in_channels), torch.arange(in_channels) % input_dim, 1, 1] = 1
    return transI_fusebn(k, bn, None)
