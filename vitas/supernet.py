"""The ViTAS super-transformer (v1, official-code behaviour with its three bugs fixed).

Layers: one private :class:`Patch_init` per patch size (``embeds.{j}``), ``depth`` blocks
(``blocks.{i}``; each may be skipped = identity), the final ``norm`` and the classifier ``head``.
A sub-network is run on the ``left`` or ``right`` slices of every shared tensor (BCNet) or on
cyclically assigned embedding channels (v2 option, provisional).

``official_compat=True`` reproduces the official bugs for comparison with official logs:
Pitfall 1 (only row -1 of the position table is added), Pitfall 2 (identity blocks do not
consume their two channel entries, so later blocks read shifted ratios) and Pitfall 3 (only
the patch-14 embedding -- candidate 0 -- is ever trained).
"""
import torch
import torch.nn as nn

from model import ViTASNet
from ops import Block, FC, Norm, Patch_init, init_vit_weights, select, width
from subnet import CHANNEL_PERCENT, Subnet, validate_subnet

SIDE_SCHEMES = ('BCNet', 'AutoSlim', 'cyclic')


class ViTASSuperNet(nn.Module):
    def __init__(self, patch_sizes=(14, 16, 32), embed_dim=384, depth=16, heads=(3, 6, 12, 16),
                 at_temp=1440, mlp_dim=1440, num_classes=1000, id_op=True, qkv=2,
                 side_scheme='BCNet', official_compat=False, img_size=224, in_chans=3,
                 channel_percent=CHANNEL_PERCENT, drop_path_rate=0.):
        super().__init__()
        if side_scheme not in SIDE_SCHEMES:
            raise ValueError(f'side_scheme must be one of {SIDE_SCHEMES}, got {side_scheme!r}')
        self.patch_sizes, self.heads = tuple(patch_sizes), tuple(heads)
        self.embed_dim, self.depth, self.at_temp, self.mlp_dim = embed_dim, depth, at_temp, mlp_dim
        self.num_classes, self.id_op, self.qkv, self.img_size = num_classes, id_op, qkv, img_size
        self.side_scheme, self.official_compat = side_scheme, official_compat
        self.channel_percent = tuple(channel_percent)
        self.embeds = nn.ModuleList(Patch_init(img_size, p, in_chans, embed_dim)
                                    for p in self.patch_sizes)
        dpr = torch.linspace(0, drop_path_rate, depth, device='cpu').tolist()
        self.blocks = nn.ModuleList(
            Block(embed_dim, self.heads, at_temp, embed_dim, mlp_dim, embed_dim, drop_path=dpr[i],
                  qkv=qkv) for i in range(depth))
        self.norm = Norm(embed_dim)
        self.head = FC(embed_dim, num_classes)
        init_vit_weights(self)
        # v2 cyclic sharing: width w_i (sorted) starts at offset (sum_{j<i} w_j) mod E_max.
        widths = sorted({width(embed_dim, r) for r in self.channel_percent})
        self._cyclic_start = {w: sum(widths[:i]) % embed_dim for i, w in enumerate(widths)}

    # ------------------------------------------------------------------ description
    def space_config(self):
        return dict(patch_sizes=self.patch_sizes, embed_dim=self.embed_dim, depth=self.depth,
                    heads=self.heads, at_temp=self.at_temp, mlp_dim=self.mlp_dim,
                    num_classes=self.num_classes, id_op=self.id_op, img_size=self.img_size)

    @property
    def qk_scale(self):
        return self.blocks[0].attn.scale

    def score_sides(self):
        """Sides a subnet is evaluated on (its score is their mean accuracy)."""
        return {'BCNet': ['left', 'right'], 'AutoSlim': ['left'], 'cyclic': ['cyclic']}[
            self.side_scheme]

    # ------------------------------------------------------------------ slicing helpers
    def _sides(self, side, d):
        """(inner side, embedding side) for a forward on ``side``."""
        if side is None:
            side = 'left'
        if side == 'cyclic':
            if d not in self._cyclic_start:
                raise ValueError(f'embedding width {d} is not one of the cyclic widths '
                                 f'{sorted(self._cyclic_start)}')
            idx = (self._cyclic_start[d] + torch.arange(d)) % self.embed_dim
            return 'left', idx.to(self.head.weight.device)
        if side not in ('left', 'right'):
            raise ValueError(f"side must be 'left', 'right', 'cyclic' or None, got {side!r}")
        return side, side

    def _block_channels(self, subnet):
        """(r_q, r_m) used by every block.  Fixed: each block reads its own entries.
        ``official_compat``: the k-th *active* block reads the k-th entry pair (Pitfall 2)."""
        pairs = subnet.channel_pairs()
        if not self.official_compat:
            return pairs
        if any(p is None for p in pairs):
            raise ValueError('official_compat needs the channel entries of identity blocks '
                             '(Subnet.id_channels)')
        out, k = [], 0
        for b in subnet.blocks:
            out.append(None if b is None else pairs[k])
            k += b is not None
        return out

    # ------------------------------------------------------------------ forward
    def forward(self, x, subnet, side='left'):
        """Logits of ``subnet`` on the ``side`` slices ('left', 'right', 'cyclic'; None = left)."""
        if not isinstance(subnet, Subnet):
            raise TypeError(f'subnet must be a Subnet, got {type(subnet).__name__}')
        validate_subnet(subnet, self.space_config())
        d = width(self.embed_dim, subnet.embed_ratio)
        inner, emb = self._sides(side, d)
        x = self.embeds[subnet.patch_idx](x, subnet.embed_ratio, emb,
                                          pos_last_row=self.official_compat)
        if self.official_compat and subnet.patch_idx != 0:
            x = x.detach()          # Pitfall 3: only candidate 0 of the patch layer is trainable
        for blk, spec, pair in zip(self.blocks, subnet.blocks, self._block_channels(subnet)):
            if spec is not None:
                x = blk(x, heads=spec[0], at_ratio=pair[0], mlp_ratio=pair[1], side=inner,
                        emb_side=emb)
        return self.head(self.norm(x, emb), emb)

    def forward_train(self, x, subnet):
        """Training logits: BCNet sums the left and right logits of the same subnet (one loss on
        the sum, Pitfall 4); AutoSlim uses the left slices; cyclic the cyclic channels."""
        if self.side_scheme == 'BCNet':
            return self.forward(x, subnet, 'left') + self.forward(x, subnet, 'right')
        return self.forward(x, subnet, 'left' if self.side_scheme == 'AutoSlim' else 'cyclic')

    # ------------------------------------------------------------------ extraction
    @torch.no_grad()
    def extract(self, subnet, side='left'):
        """Stand-alone :class:`ViTASNet` holding the ``side`` slices of ``subnet`` (fixed
        semantics; keeps the supernet attention scale, so its logits equal the supernet's)."""
        validate_subnet(subnet, self.space_config())
        d = width(self.embed_dim, subnet.embed_ratio)
        inner, emb = self._sides(side, d)
        emb_mod = self.embeds[subnet.patch_idx]
        arch, params = [], []
        for blk, spec in zip(self.blocks, subnet.blocks):
            if spec is None:
                arch.append(None)
                continue
            h, rq, rm = spec
            wqkv, bqkv = blk.attn.qkv_weight(h, rq, d, inner, emb)
            m = width(self.mlp_dim, rm)
            arch.append((self.heads[h], wqkv.shape[0], m))
            params.append((blk, wqkv, bqkv, m))
        net = ViTASNet(d, self.patch_sizes[subnet.patch_idx], arch, self.num_classes,
                       drop_path_rate=0., qk_scale=self.qk_scale, img_size=self.img_size,
                       in_chans=emb_mod.proj.in_channels, norm_eps=self.norm.eps)
        pe = net.patch_embed
        pe.proj.weight.copy_(emb_mod.proj.sliced(d, emb)[0])
        pe.proj.bias.copy_(emb_mod.proj.sliced(d, emb)[1])
        pe.cls_token.copy_(select(emb_mod.cls_token, 2, d, emb))
        pe.pos_embed.copy_(select(emb_mod.pos_embed, 2, d, emb))
        for tgt, (blk, wqkv, bqkv, m) in zip(net.blocks, params):
            q = wqkv.shape[0] // 3
            for name in ('norm1', 'norm2'):
                w, b = getattr(blk, name).sliced(d, emb)
                getattr(tgt, name).weight.copy_(w)
                getattr(tgt, name).bias.copy_(b)
            tgt.attn.qkv.weight.copy_(wqkv)
            tgt.attn.qkv.bias.copy_(bqkv)
            self._copy_linear(tgt.attn.proj, blk.attn.proj.sliced(d, q, emb, inner))
            self._copy_linear(tgt.mlp.fc1, blk.mlp.fc1.sliced(m, d, inner, emb))
            self._copy_linear(tgt.mlp.fc2, blk.mlp.fc2.sliced(d, m, emb, inner))
        net.norm.weight.copy_(select(self.norm.weight, 0, d, emb))
        net.norm.bias.copy_(select(self.norm.bias, 0, d, emb))
        w, b = self.head.sliced_in(d, emb)
        net.head.weight.copy_(w)
        net.head.bias.copy_(b)
        return net

    @staticmethod
    def _copy_linear(dst, wb):
        dst.weight.copy_(wb[0])
        dst.bias.copy_(wb[1])
