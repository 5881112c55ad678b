"""Stand-alone (retrain) ViTAS models and the released architectures.

``ViTASNet`` is a DeiT-style single-stage ViT whose blocks may all differ (heads, q/k/v width,
MLP width).  state_dict keys::

    patch_embed.proj.weight|bias, patch_embed.cls_token, patch_embed.pos_embed,
    blocks.{k}.norm1|norm2.weight|bias, blocks.{k}.attn.qkv|proj.weight|bias,
    blocks.{k}.mlp.fc1|fc2.weight|bias, norm.weight|bias, head.weight|bias

(``k`` counts the active blocks; identity slots have no parameters but keep their drop-path rate).
"""
import torch
import torch.nn as nn

from ops import Block, FC, Norm, Patch_init, init_vit_weights
from subnet import CHANNEL_PERCENT, decode_net_id, resolve_space, subnet_dims

# The two released search spaces (constructor arguments of ViTASSuperNet).
TINY_SPACE = dict(patch_sizes=(14, 16, 32), embed_dim=384, depth=16, heads=(3, 6, 12, 16),
                  at_temp=1440, mlp_dim=1440, num_classes=1000, id_op=True)
SMALL_SPACE = dict(patch_sizes=(14, 16, 32), embed_dim=768, depth=13, heads=(3, 6, 12, 16),
                   at_temp=2880, mlp_dim=2880, num_classes=1000, id_op=False)

NET_IDS = {
    'ViTAS-A': ('1 2 4 3 4 4 1 3 4 3 4 4 4 4 3 3 4 0 0 3 1 6 7 9 4 3 6 8 4 9 1 8 6 4 9 2 7 6 8 9 '
                '3 0 3 8 7 0 5 7 9 8 4 4', 19, TINY_SPACE),
    'ViTAS-B': ('1 3 4 4 3 4 3 4 4 2 2 4 2 3 4 4 1 0 0 4 1 5 1 6 2 2 2 3 2 9 2 6 3 9 5 7 7 5 6 4 '
                '8 1 5 3 2 8 5 9 2 4 5 5', 19, TINY_SPACE),
    'ViTAS-E': ('1 3 4 3 4 3 1 4 0 4 2 1 2 4 2 1 2 0 0 8 4 4 1 7 6 5 3 8 5 6 5 6 3 6 3 4 4 4 8 8 '
                '8 7 4 0 4 5 9 5 3 6 7 8', 19, TINY_SPACE),
    'ViTAS-F': ('1 3 3 3 3 3 3 3 3 3 3 3 3 3 0 0 3 2 5 0 7 5 2 3 6 6 2 4 4 8 7 4 6 7 2 6 1 6 6 4 '
                '7 5 7', 16, SMALL_SPACE),
}


class ViTASNet(nn.Module):
    """Stand-alone searched ViT.

    Args:
        embed_dim: token width D.
        patch_size: patch size (sequence length (img/p)^2 + 1).
        blocks: per layer slot ``(heads, at_temp, mlp_hidden)`` or ``None`` (identity); ``at_temp``
            is the total q+k+v width (q width = at_temp / 3).
        drop_path_rate: stochastic depth, ``linspace(0, rate, len(blocks))`` indexed by slot.
        qk_scale: attention scale; default ``(embed_dim // heads) ** -0.5`` (official quirk).
        norm_eps: eps of the final LayerNorm (1e-5 in ViTAS; DeiT uses 1e-6).
    """

    def __init__(self, embed_dim, patch_size, blocks, num_classes=1000, drop_path_rate=0.1,
                 qk_scale=None, img_size=224, in_chans=3, norm_eps=1e-5):
        super().__init__()
        self.embed_dim, self.patch_size, self.img_size = embed_dim, patch_size, img_size
        self.arch = [None if b is None else tuple(int(v) for v in b) for b in blocks]
        self.patch_embed = Patch_init(img_size, patch_size, in_chans, embed_dim)
        dpr = torch.linspace(0, drop_path_rate, len(blocks), device='cpu').tolist() if blocks else []
        self.blocks = nn.ModuleList([
            Block(embed_dim, b[0], b[1], embed_dim, b[2], embed_dim, drop_path=dpr[i], qkv=0,
                  qk_scale=qk_scale)
            for i, b in enumerate(self.arch) if b is not None])
        self.norm = Norm(embed_dim, eps=norm_eps)
        self.head = FC(embed_dim, num_classes)
        init_vit_weights(self)

    def forward_features(self, x):
        x = self.patch_embed(x)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)

    def forward(self, x):
        return self.head(self.forward_features(x))

    def describe(self):
        """Human-readable dims: per slot (heads, qkv, q, mlp) or 'id'."""
        parts = ['id' if b is None else f'({b[0]},{b[1]},{b[1] // 3},{b[2]})' for b in self.arch]
        return f'patch {self.patch_size}, embed {self.embed_dim}: ' + ' '.join(parts)


def build_from_net_id(net_id, model_len, supernet_cfg=None, channel_percent=CHANNEL_PERCENT,
                      **kwargs):
    """Stand-alone model from an official ``net_id`` (identity blocks dropped, widths fixed)."""
    space = resolve_space(supernet_cfg if supernet_cfg is not None else TINY_SPACE)
    subnet = decode_net_id(net_id, model_len, channel_percent, n_heads=len(space['heads']))
    patch, d, blocks = subnet_dims(subnet, space)
    kwargs.setdefault('num_classes', space['num_classes'])
    kwargs.setdefault('img_size', space['img_size'])
    return ViTASNet(d, patch, blocks, **kwargs)


def ViTAS_A(**kwargs):
    """ViTAS-A (858M FLOPs, 71.1 top-1)."""
    return build_from_net_id(*NET_IDS['ViTAS-A'], **kwargs)


def ViTAS_B(**kwargs):
    """ViTAS-B (1.0G, 72.4)."""
    return build_from_net_id(*NET_IDS['ViTAS-B'], **kwargs)


def ViTAS_C(**kwargs):
    """ViTAS-C, the block-level 1.3G result: embed 230, 12 x (3 heads, qkv 432, MLP 720)."""
    return ViTASNet(230, 16, [(3, 432, 720)] * 12, **kwargs)


def ViTAS_E(**kwargs):
    """ViTAS-E (2.7G, 77.4)."""
    return build_from_net_id(*NET_IDS['ViTAS-E'], **kwargs)


def ViTAS_F(**kwargs):
    """ViTAS-F (4.9G, 80.6), from the 768-wide 13-block space."""
    return build_from_net_id(*NET_IDS['ViTAS-F'], **kwargs)


def DeiT_Ti(**kwargs):
    """DeiT-Ti baseline (192 wide, 12 x 3 heads, MLP 768, final LN eps 1e-6)."""
    kwargs.setdefault('norm_eps', 1e-6)
    return ViTASNet(192, 16, [(3, 576, 768)] * 12, **kwargs)


def DeiT_S(**kwargs):
    """DeiT-S baseline (384 wide, 12 x 6 heads, MLP 1536)."""
    kwargs.setdefault('norm_eps', 1e-6)
    return ViTASNet(384, 16, [(6, 1152, 1536)] * 12, **kwargs)


MODELS = {'ViTAS-A': ViTAS_A, 'ViTAS-B': ViTAS_B, 'ViTAS-C': ViTAS_C, 'ViTAS-E': ViTAS_E,
          'ViTAS-F': ViTAS_F, 'DeiT-Ti': DeiT_Ti, 'DeiT-S': DeiT_S}
