"""GreenMIM's masked autoencoder (MAE-style): the encoder sees the visible mask units only, a light ViT
decoder reconstructs the (normalised) pixels of the masked units.

Imports only torch and numpy.
"""
from functools import partial

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


class BaseGreenModel(nn.Module):
    """Base of the green encoders: drops the masked patches before the transformer."""

    def apply_mask(self, x, mask, patches_resolution):
        """``x`` (B, N, C) patch tokens of an ``H x W`` grid; ``mask`` (1 or B, L) bool, True = masked, on a
        coarser grid of ``L`` units (one mask for the whole batch: its first row is used).

        Returns the visible tokens (B, N_vis, C) in row-major order, their coordinates (1, N_vis, 2) and the
        visibility mask (1, N) on the patch grid.
        """
        B, N, C = x.shape
        H, W = patches_resolution
        mask = mask[:1].bool()
        ratio = N // mask.shape[1]
        r = int(round(ratio ** 0.5))
        if r * r * mask.shape[1] != N or H % r or W % r:
            raise ValueError(f'a mask of {mask.shape[1]} units does not tile the {H}x{W} patch grid')
        if r > 1:
            mask = mask.reshape(1, H // r, 1, W // r, 1).expand(-1, -1, r, -1, r).reshape(1, N)
        vis_mask = ~mask
        coords = get_grid_coords(H, W, x.device)[vis_mask[0]].unsqueeze(0)
        x_vis = x[:, vis_mask[0]]
        return x_vis, coords, vis_mask

    def patchify(self, x):
        raise NotImplementedError

    def forward_features(self, x, mask):
        raise NotImplementedError

    def forward(self, x, mask):
        return self.forward_features(x, mask)


def get_grid_coords(h, w, device='cpu'):
    """(h*w, 2) row-major (row, col) coordinates."""
    rows, cols = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing='ij')
    return torch.stack([rows.reshape(-1), cols.reshape(-1)], dim=1)


def get_1d_sincos_pos_embed(dim, pos):
    """[sin(p w_k) for k < dim/2, cos(p w_k) for k < dim/2], w_k = 10000^(-k / (dim/2)), float64."""
    omega = 1. / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.))
    out = np.einsum('m,d->md', np.asarray(pos, dtype=np.float64).reshape(-1), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def get_2d_sincos_pos_embed(embed_dim, grid_size):
    """(grid_size^2, embed_dim) fixed 2-D sin-cos embedding of a row-major grid: the first half of the
    dimensions encodes the column index, the second half the row index (MAE's meshgrid order)."""
    rows, cols = np.meshgrid(np.arange(grid_size), np.arange(grid_size), indexing='ij')
    return np.concatenate([get_1d_sincos_pos_embed(embed_dim // 2, cols),
                           get_1d_sincos_pos_embed(embed_dim // 2, rows)], axis=1)


class Attention(nn.Module):
    """ViT multi-head self-attention (timm ``Attention`` names: ``qkv``, ``proj``)."""

    def __init__(self, dim, num_heads=8, qkv_bias=False):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(B, N, C))


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm ViT block (timm ``Block`` names: ``norm1``, ``attn``, ``norm2``, ``mlp.fc1/fc2``)."""

    def __init__(self, dim, num_heads, mlp_ratio=4., qkv_bias=False, norm_layer=nn.LayerNorm):
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias)
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class MaskedAutoencoder(nn.Module):
    """Encoder on visible units + 1-block ViT decoder + normalised-pixel MSE on the masked units.

    ``official_decoder_order=False`` (default) fixes the official decoder-order bug: the Swin encoder returns
    the visible units in row-major order, but the decoder appends the mask tokens and un-shuffles with
    ``ids_restore`` as if the latent were in noise (``ids_keep``) order. We reorder the latent into
    ``ids_keep`` order first, so every visible feature lands on its own position; ``True`` reproduces the
    official behaviour (with which the published numbers were obtained).
    """

    def __init__(self, encoder, embed_dim, patch_size, in_chans=3, decoder_num_patches=49, decoder_embed_dim=512,
                 decoder_depth=1, decoder_num_heads=16, norm_layer=partial(nn.LayerNorm, eps=1e-6),
                 norm_pix_loss=True, mlp_ratio=4, official_decoder_order=False):
        super().__init__()
        self.encoder = encoder
        self.num_patches = decoder_num_patches
        self.final_patch_size = patch_size
        self.in_chans = in_chans
        self.norm_pix_loss = norm_pix_loss
        self.official_decoder_order = official_decoder_order

        self.decoder_embed = nn.Linear(embed_dim, decoder_embed_dim, bias=True)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_embed_dim))
        self.decoder_pos_embed = nn.Parameter(torch.zeros(1, decoder_num_patches, decoder_embed_dim),
                                              requires_grad=False)  # fixed sin-cos
        self.decoder_blocks = nn.ModuleList([
            Block(decoder_embed_dim, decoder_num_heads, mlp_ratio, qkv_bias=True, norm_layer=norm_layer)
            for _ in range(decoder_depth)])
        self.decoder_norm = norm_layer(decoder_embed_dim)
        self.decoder_pred = nn.Linear(decoder_embed_dim, patch_size ** 2 * in_chans, bias=True)
        self.initialize_weights()

    def initialize_weights(self):
        grid = int(round(self.num_patches ** .5))
        pos = get_2d_sincos_pos_embed(self.decoder_pos_embed.shape[-1], grid)
        self.decoder_pos_embed.data.copy_(torch.from_numpy(pos).float().unsqueeze(0))
        for m in self.modules():  # convolutions (the patch embedding) like a Linear on the flattened kernel
            if isinstance(m, (nn.Conv1d, nn.Conv2d)):
                nn.init.xavier_uniform_(m.weight.data.view(m.weight.shape[0], -1))
        nn.init.normal_(self.mask_token, std=.02)
        self.apply(self._init_weights)  # every Linear, encoder included

    @staticmethod
    def _init_weights(m):
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    # ------------------------------------------------------------------------------------- pixels
    def patchify(self, imgs, patch_size=None):
        """(B, C, H, W) -> (B, L, p*p*C), each unit ordered (p_row, p_col, channel)."""
        p = patch_size or self.final_patch_size
        B, C, H, W = imgs.shape
        if H % p or W % p:
            raise ValueError(f'image {H}x{W} is not divisible into {p}x{p} units')
        x = imgs.reshape(B, C, H // p, p, W // p, p)
        return torch.einsum('nchpwq->nhwpqc', x).reshape(B, (H // p) * (W // p), p * p * C)

    def unpatchify(self, x, patch_size=None):
        p = patch_size or self.final_patch_size
        h = w = int(round(x.shape[1] ** .5))
        x = x.reshape(x.shape[0], h, w, p, p, -1)
        return torch.einsum('nhwpqc->nchpwq', x).reshape(x.shape[0], -1, h * p, w * p)

    # ------------------------------------------------------------------------------------- masking
    def random_masking(self, x, mask_ratio, noise=None):
        """One mask for the whole batch: ``noise`` (1, L) (drawn U(0,1) when None), keep the
        ``int(L (1 - mask_ratio))`` units of smallest noise. Returns ``mask`` (B, L) (1 = removed) and
        ``ids_restore`` (B, L)."""
        L = self.num_patches
        len_keep = int(L * (1 - mask_ratio))
        if noise is None:
            noise = torch.rand(1, L, device=x.device)
        noise = noise[:1].to(x.device)
        ids_shuffle = torch.argsort(noise, dim=1)
        ids_restore = torch.argsort(ids_shuffle, dim=1)
        mask = torch.ones(1, L, device=x.device)
        mask[:, :len_keep] = 0
        mask = torch.gather(mask, 1, ids_restore)
        B = x.shape[0]
        return mask.expand(B, -1).contiguous(), ids_restore.expand(B, -1).contiguous()

    def forward_encoder(self, imgs, mask_ratio, noise=None):
        mask, ids_restore = self.random_masking(imgs, mask_ratio, noise)
        latent = self.encoder(imgs, mask.bool())
        return latent, mask, ids_restore

    def forward_decoder(self, latent, ids_restore, ids_keep=None):
        """``latent`` (B, N_vis, C) in row-major order of the visible units -> (B, L, p*p*C)."""
        B, n_vis, _ = latent.shape
        if not self.official_decoder_order:
            if ids_keep is None:
                ids_keep = torch.argsort(ids_restore, dim=1)[:, :n_vis]
            # latent[j] belongs to the j-th smallest kept unit; put it at the slot of its unit in ids_keep
            rank = torch.argsort(torch.argsort(ids_keep, dim=1), dim=1)
            latent = torch.gather(latent, 1, rank.unsqueeze(-1).expand(-1, -1, latent.shape[-1]))
        x = self.decoder_embed(latent)
        mask_tokens = self.mask_token.expand(B, ids_restore.shape[1] - n_vis, -1).to(x.dtype)
        x = torch.cat([x, mask_tokens], dim=1)
        x = torch.gather(x, 1, ids_restore.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
        x = x + self.decoder_pos_embed
        for blk in self.decoder_blocks:
            x = blk(x)
        return self.decoder_pred(self.decoder_norm(x))

    def forward_loss(self, imgs, pred, mask):
        """Mean over the masked units of the per-unit MSE against the (per-unit normalised) pixels."""
        target = self.patchify(imgs)
        if self.norm_pix_loss:
            mean = target.mean(dim=-1, keepdim=True)
            var = target.var(dim=-1, keepdim=True)  # unbiased, as the official code
            target = (target - mean) / (var + 1.e-6) ** .5
        loss = ((pred.float() - target) ** 2).mean(dim=-1)
        return (loss * mask).sum() / mask.sum()

    def forward(self, imgs, mask_ratio=0.75, noise=None):
        latent, mask, ids_restore = self.forward_encoder(imgs, mask_ratio, noise)
        pred = self.forward_decoder(latent, ids_restore)
        return self.forward_loss(imgs, pred, mask), pred, mask
