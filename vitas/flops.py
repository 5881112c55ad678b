"""FLOPs of ViTAS architectures.

``count_flops`` follows the official counter (the paper's FLOPs and the search budgets use it):
multiply-accumulates with N = (img/p)^2 patch tokens -- the class token is *not* counted -- and
LayerNorm / softmax / GELU / residual / bias free::

    patch conv   3 * D * N * p^2
    block        N*D*Q + 2*N^2*(Q//3) + N*(Q//3)*D + N*D*M + N*M*D      (Q = q+k+v width)
    identity     0
    classifier   N * D * num_classes     (charged once per patch token: official quirk, kept)

``count_flops_standard`` is PyTorch's FLOP counter on a real forward (2 x MACs, 197 tokens,
classifier once) -- for reference only.
"""
import itertools

import torch

from subnet import CHANNEL_PERCENT, Subnet, resolve_space, subnet_dims


def official_macs(img_size, patch_size, embed_dim, blocks, num_classes=1000, in_chans=3):
    """Official MAC count of a single-stage ViT with per-slot ``(heads, Q, M)`` or ``None``."""
    n = (img_size // patch_size) ** 2
    d = embed_dim
    total = in_chans * d * n * patch_size * patch_size
    for b in blocks:
        if b is None:
            continue
        _, q, m = b
        total += n * d * q + 2 * n * n * (q // 3) + n * (q // 3) * d + n * d * m + n * m * d
    return total + n * d * num_classes


def count_flops(subnet_or_model, supernet_cfg=None):
    """Official-semantics FLOPs of a :class:`Subnet` (with its ``supernet_cfg``) or of a
    stand-alone ``ViTASNet``."""
    if isinstance(subnet_or_model, Subnet):
        space = resolve_space(supernet_cfg)
        patch, d, blocks = subnet_dims(subnet_or_model, space)
        return official_macs(space['img_size'], patch, d, blocks, space['num_classes'])
    m = subnet_or_model
    if not hasattr(m, 'arch'):
        raise TypeError(f'count_flops expects a Subnet or a ViTASNet, got {type(m).__name__}')
    return official_macs(m.img_size, m.patch_size, m.embed_dim, m.arch, m.head.out_features,
                         m.patch_embed.proj.in_channels)


def count_flops_standard(model, img=224):
    """``torch.utils.flop_counter`` total for one image (2 FLOPs per MAC, every token)."""
    from torch.utils.flop_counter import FlopCounterMode
    was_training = model.training
    model.eval()
    p = next(model.parameters())
    in_chans = model.patch_embed.proj.in_channels
    x = torch.zeros(1, in_chans, img, img, dtype=p.dtype, device=p.device)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    model.train(was_training)
    return int(counter.get_total_flops())


def expected_flops(id_prop, supernet_cfg=None, channel_percent=CHANNEL_PERCENT):
    """Exact expectation of the official FLOPs of a random subnet (``generate_subnet`` with
    identity probability ``id_prop``).  Linear in ``id_prop``."""
    space = resolve_space(supernet_cfg)
    e, q_tot, m_max = space['embed_dim'], space['at_temp'], space['mlp_dim']
    cp = list(channel_percent)
    fixed, block = 0.0, 0.0
    for p, re in itertools.product(space['patch_sizes'], cp):
        n = (space['img_size'] // p) ** 2
        d = int(round(e * re))
        fixed += official_macs(space['img_size'], p, d, [], space['num_classes'])
        for rq, rm in itertools.product(cp, cp):
            q, m = int(round(q_tot * rq)), int(round(m_max * rm))
            block += n * d * q + 2 * n * n * (q // 3) + n * (q // 3) * d + 2 * n * d * m
    fixed /= len(space['patch_sizes']) * len(cp)
    block /= len(space['patch_sizes']) * len(cp) ** 3
    keep = (1 - id_prop) if space['id_op'] else 1.0
    return fixed + space['depth'] * keep * block
