"""The Swin Transformer encoder of GreenMIM: runs on the visible patches only (``forward(x, mask)``), and on
the full image (``forward_dense(x)``: standard Swin with cyclic shift, used for fine-tuning and as the
dense baseline). Both paths share every weight; module names follow the official release.

Imports only torch and sibling algorithm modules.
"""
import torch
import torch.nn as nn
import torch.utils.checkpoint as checkpoint

from base_green_models import BaseGreenModel
from group_window_attention import BLOCKED, GroupingModule, WindowAttention, get_coordinates


class DropPath(nn.Module):
    """Stochastic depth per sample."""

    def __init__(self, drop_prob=0.):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x):
        if self.drop_prob == 0. or not self.training:
            return x
        keep = 1 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self):
        return f'drop_prob={self.drop_prob}'


class Mlp(nn.Module):
    def __init__(self, in_features, hidden_features=None, out_features=None, act_layer=nn.GELU, drop=0.):
        super().__init__()
        hidden_features = hidden_features or in_features
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden_features, out_features or in_features)
        self.drop = nn.Dropout(drop)

    def forward(self, x):
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class SwinTransformerBlock(nn.Module):
    """Pre-norm Swin block on a sequence of (grouped) windows: ``x + attn(LN(x))``, ``x + MLP(LN(x))``.
    Window partition / grouping happens outside (every other op is per token)."""

    def __init__(self, dim, input_resolution, num_heads, window_size=7, shift_size=0, mlp_ratio=4., qkv_bias=True,
                 qk_scale=None, drop=0., attn_drop=0., drop_path=0., act_layer=nn.GELU, norm_layer=nn.LayerNorm):
        super().__init__()
        self.dim, self.input_resolution, self.num_heads = dim, input_resolution, num_heads
        self.window_size, self.shift_size, self.mlp_ratio = window_size, shift_size, mlp_ratio
        if min(input_resolution) <= window_size:  # one window covers the map: no partition, no shift
            self.shift_size, self.window_size = 0, min(input_resolution)
        if not 0 <= self.shift_size < self.window_size:
            raise ValueError(f'shift_size must be in [0, window_size), got {shift_size}')
        self.norm1 = norm_layer(dim)
        self.attn = WindowAttention(dim, self.window_size, num_heads, qkv_bias=qkv_bias, qk_scale=qk_scale,
                                    attn_drop=attn_drop, proj_drop=drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=act_layer, drop=drop)

    def forward(self, x, attn_mask, rel_pos_idx):
        x = x + self.drop_path(self.attn(self.norm1(x), mask=attn_mask, pos_idx=rel_pos_idx))
        return x + self.drop_path(self.mlp(self.norm2(x)))

    def extra_repr(self):
        return (f'dim={self.dim}, input_resolution={self.input_resolution}, num_heads={self.num_heads}, '
                f'window_size={self.window_size}, shift_size={self.shift_size}, mlp_ratio={self.mlp_ratio}')


class PatchMerging(nn.Module):
    """2x2 patch merging (concat order (0,0),(1,0),(0,1),(1,1), LayerNorm 4C, Linear 4C -> 2C).

    ``forward(x, coords_prev, mask_prev)`` merges the visible tokens (row-major) of an ``H x W`` map whose
    visibility ``mask_prev`` (1, H*W) is constant on every 2x2 block; ``forward_dense(x)`` merges a full map.
    """

    def __init__(self, input_resolution, dim, norm_layer=nn.LayerNorm):
        super().__init__()
        self.input_resolution, self.dim = input_resolution, dim
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = norm_layer(4 * dim)

    def _merge(self, x):  # x: (B, L, 4, C) with the four tokens of a block in row-first order
        x = torch.cat([x[:, :, 0], x[:, :, 2], x[:, :, 1], x[:, :, 3]], dim=-1)  # row offset first (Swin)
        return self.reduction(self.norm(x))

    def forward(self, x, coords_prev, mask_prev):
        H, W = self.input_resolution
        B, L, C = x.shape
        vis = mask_prev.reshape(H // 2, 2, W // 2, 2)
        per_block = vis.sum(dim=(1, 3))
        if not bool(((per_block == 0) | (per_block == 4)).all()):
            raise ValueError('PatchMerging needs every 2x2 block fully visible or fully masked (mask units must '
                             'be last-stage tokens)')
        yx = torch.nonzero(mask_prev.reshape(H, W))  # row-major visible coordinates, (L, 2)
        key = ((yx[:, 0] // 2) * (W // 2) + yx[:, 1] // 2) * 4 + (yx[:, 0] % 2) * 2 + yx[:, 1] % 2
        x = torch.index_select(x, 1, torch.argsort(key)).reshape(B, L // 4, 4, C)
        x = self._merge(x)
        mask_new = (per_block > 0).reshape(1, -1)
        coords_new = torch.nonzero(mask_new.reshape(H // 2, W // 2)).unsqueeze(0)
        return x, coords_new, mask_new

    def forward_dense(self, x):
        H, W = self.input_resolution
        B, L, C = x.shape
        x = x.view(B, H // 2, 2, W // 2, 2, C).permute(0, 1, 3, 2, 4, 5).reshape(B, L // 4, 4, C)
        return self._merge(x)

    def extra_repr(self):
        return f'input_resolution={self.input_resolution}, dim={self.dim}'


def window_partition(x, ws):
    """(B, H, W, C) -> (B * nW, ws*ws, C), windows in row-major order per image."""
    B, H, W, C = x.shape
    return x.view(B, H // ws, ws, W // ws, ws, C).permute(0, 1, 3, 2, 4, 5).reshape(-1, ws * ws, C)


def window_reverse(windows, ws, H, W):
    B = windows.shape[0] // ((H // ws) * (W // ws))
    x = windows.view(B, H // ws, W // ws, ws, ws, -1).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(B, H, W, -1)


def shifted_window_mask(H, W, ws, shift, device='cpu'):
    """Swin's mask for cyclic-shifted windows: (nW, ws^2, ws^2), 0 within a region, -100 across."""
    region = torch.zeros(1, H, W, 1, device=device)
    if shift > 0:
        cnt = 0
        for hs in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
            for wsl in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
                region[:, hs, wsl, :] = cnt
                cnt += 1
    r = window_partition(region, ws).squeeze(-1)
    return torch.zeros(r.shape[0], ws * ws, ws * ws, device=device).masked_fill_(
        r[:, :, None] != r[:, None, :], BLOCKED)


class BasicLayer(nn.Module):
    """One Swin stage: ``depth`` blocks (regular / shifted windows alternating) and an optional merging."""

    def __init__(self, dim, input_resolution, depth, num_heads, window_size, mlp_ratio=4., qkv_bias=True,
                 qk_scale=None, drop=0., attn_drop=0., drop_path=0., norm_layer=nn.LayerNorm, downsample=None,
                 use_checkpoint=False, search_group_size=False, group_size=None):
        super().__init__()
        self.dim, self.input_resolution, self.depth = dim, input_resolution, depth
        self.use_checkpoint, self.search_group_size = use_checkpoint, search_group_size
        self.group_size = group_size  # None: the official g = min(ws^2, largest window); changes speed only
        if min(input_resolution) <= window_size:
            self.window_size, self.shift_size = min(input_resolution), 0
        else:
            self.window_size, self.shift_size = window_size, window_size // 2
        self.blocks = nn.ModuleList([
            SwinTransformerBlock(dim, input_resolution, num_heads, window_size=window_size,
                                 shift_size=0 if i % 2 == 0 else window_size // 2, mlp_ratio=mlp_ratio,
                                 qkv_bias=qkv_bias, qk_scale=qk_scale, drop=drop, attn_drop=attn_drop,
                                 drop_path=drop_path[i] if isinstance(drop_path, (list, tuple)) else drop_path,
                                 norm_layer=norm_layer)
            for i in range(depth)])
        self.downsample = downsample(input_resolution, dim=dim, norm_layer=norm_layer) if downsample else None

    def _run(self, blk, x, mask, pos_idx):
        if self.use_checkpoint and self.training:
            return checkpoint.checkpoint(blk, x, mask, pos_idx, use_reentrant=False)
        return blk(x, mask, pos_idx)

    def groupings(self, coords, num_tokens):
        """The regular and the shifted grouping of this stage (built once, shared by all its blocks)."""
        kw = dict(group_size=self.group_size, search_group_size=self.search_group_size, dim=self.dim)
        regular = GroupingModule(self.window_size, 0, **kw)
        out = [(regular, *regular.prepare(coords, num_tokens))]
        if self.shift_size > 0:
            shifted = GroupingModule(self.window_size, self.shift_size, **kw)
            out.append((shifted, *shifted.prepare(coords, num_tokens)))
        else:
            out.append(out[0])
        return out

    def forward(self, x, coords, patch_mask):
        """Visible tokens ``x`` (B, N_vis, C), their coordinates (1, N_vis, 2) and the visibility mask
        (1, H*W) -> the same three for the next stage."""
        groupings = self.groupings(coords, x.shape[1])
        for i, blk in enumerate(self.blocks):
            gm, mask, pos_idx = groupings[i % 2]
            x = gm.merge(self._run(blk, gm.group(x), mask, pos_idx), batch_size=x.shape[0])
        if self.downsample is not None:
            x, coords, patch_mask = self.downsample(x, coords, patch_mask)
        return x, coords, patch_mask

    def forward_dense(self, x):
        """All tokens (B, H*W, C): standard Swin (cyclic shift + window partition + shifted-window mask)."""
        H, W = self.input_resolution
        B, L, C = x.shape
        ws = self.window_size
        if H % ws or W % ws:
            raise ValueError(f'the dense Swin path needs the resolution {H}x{W} to be a multiple of the window {ws}')
        pos_idx = self.blocks[0].attn.relative_position_index[None] if self.blocks else None
        masks = {0: torch.zeros(1, ws * ws, ws * ws, device=x.device)}
        if self.shift_size:
            masks[self.shift_size] = shifted_window_mask(H, W, ws, self.shift_size, x.device)
        for i, blk in enumerate(self.blocks):
            sh = self.shift_size if i % 2 else 0
            h = x.view(B, H, W, C)
            if sh:
                h = torch.roll(h, shifts=(-sh, -sh), dims=(1, 2))
            mask = masks[sh]
            if mask.shape[0] == 1 and (H // ws) * (W // ws) > 1:
                mask = mask.expand((H // ws) * (W // ws), -1, -1)
            h = self._run(blk, window_partition(h, ws), mask, pos_idx.expand(mask.shape[0], -1, -1))
            h = window_reverse(h, ws, H, W)
            if sh:
                h = torch.roll(h, shifts=(sh, sh), dims=(1, 2))
            x = h.reshape(B, L, C)
        if self.downsample is not None:
            x = self.downsample.forward_dense(x)
        return x

    def extra_repr(self):
        return (f'dim={self.dim}, input_resolution={self.input_resolution}, window_size={self.window_size}, '
                f'shift_size={self.shift_size}, depth={self.depth}')


class PatchEmbed(nn.Module):
    """Non-overlapping ``patch_size`` convolution (run densely on the full image) + optional LayerNorm."""

    def __init__(self, img_size=224, patch_size=4, in_chans=3, embed_dim=96, norm_layer=None):
        super().__init__()
        self.img_size, self.patch_size = (img_size, img_size), (patch_size, patch_size)
        self.patches_resolution = [img_size // patch_size, img_size // patch_size]
        self.num_patches = self.patches_resolution[0] * self.patches_resolution[1]
        self.in_chans, self.embed_dim = in_chans, embed_dim
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = norm_layer(embed_dim) if norm_layer is not None else None

    def forward(self, x):
        if tuple(x.shape[2:]) != self.img_size:
            raise ValueError(f'input image size {tuple(x.shape[2:])} does not match the model {self.img_size}')
        x = self.proj(x).flatten(2).transpose(1, 2)
        return self.norm(x) if self.norm is not None else x


class SwinTransformer(BaseGreenModel):
    """Swin encoder without a head. ``forward(x, mask)``: ``mask`` (1 or B, units) bool, True = masked, on
    the grid of last-stage tokens; the first row is used for the whole batch -> latent (B, N_vis_last, C_last)
    in row-major order of the visible units. ``forward_dense(x)``: all tokens (B, L_last, C_last)."""

    def __init__(self, img_size=224, patch_size=4, in_chans=3, embed_dim=96, depths=(2, 2, 6, 2),
                 num_heads=(3, 6, 12, 24), window_size=7, mlp_ratio=4., qkv_bias=True, qk_scale=None,
                 drop_rate=0., attn_drop_rate=0., drop_path_rate=0.1, norm_layer=nn.LayerNorm, ape=False,
                 patch_norm=True, use_checkpoint=False, search_group_size=False):
        super().__init__()
        self.num_layers = len(depths)
        self.embed_dim, self.ape, self.patch_norm, self.mlp_ratio = embed_dim, ape, patch_norm, mlp_ratio
        self.depths, self.window_size = list(depths), window_size
        self.num_features = int(embed_dim * 2 ** (self.num_layers - 1))
        self.drop_path_rate = drop_path_rate
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim,
                                      norm_layer=norm_layer if patch_norm else None)
        res = self.patches_resolution = self.patch_embed.patches_resolution
        if res[0] % 2 ** (self.num_layers - 1) or res[1] % 2 ** (self.num_layers - 1):
            raise ValueError(f'the {res[0]}x{res[1]} patch grid cannot be halved {self.num_layers - 1} times')
        if ape:
            self.absolute_pos_embed = nn.Parameter(torch.zeros(1, self.patch_embed.num_patches, embed_dim))
            nn.init.trunc_normal_(self.absolute_pos_embed, std=.02)
        self.pos_drop = nn.Dropout(p=drop_rate)
        dpr = torch.linspace(0, drop_path_rate, sum(depths), device='cpu').tolist()  # stochastic depth rule
        self.layers = nn.ModuleList()
        for i in range(self.num_layers):
            self.layers.append(BasicLayer(
                dim=int(embed_dim * 2 ** i), input_resolution=(res[0] // 2 ** i, res[1] // 2 ** i),
                depth=depths[i], num_heads=num_heads[i], window_size=window_size, mlp_ratio=mlp_ratio,
                qkv_bias=qkv_bias, qk_scale=qk_scale, drop=drop_rate, attn_drop=attn_drop_rate,
                drop_path=dpr[sum(depths[:i]):sum(depths[:i + 1])], norm_layer=norm_layer,
                downsample=PatchMerging if i < self.num_layers - 1 else None, use_checkpoint=use_checkpoint,
                search_group_size=search_group_size))
        self.norm = norm_layer(self.num_features)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m):
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    @property
    def mask_grid(self):
        """Side of the mask-unit grid (= the last-stage token grid)."""
        return self.patches_resolution[0] // 2 ** (self.num_layers - 1)

    def no_weight_decay(self):
        return {'absolute_pos_embed'}

    def no_weight_decay_keywords(self):
        return {'relative_position_bias_table'}

    def patchify(self, x):
        x = self.patch_embed(x)
        if self.ape:
            x = x + self.absolute_pos_embed
        return self.pos_drop(x)

    def forward_features(self, x, mask):
        x = self.patchify(x)
        x_vis, coords, vis_mask = self.apply_mask(x, mask, self.patches_resolution)
        for layer in self.layers:
            x_vis, coords, vis_mask = layer(x_vis, coords, vis_mask)
        return self.norm(x_vis)

    def forward_dense(self, x):
        x = self.patchify(x)
        for layer in self.layers:
            x = layer.forward_dense(x)
        return self.norm(x)
