"""IPT: the pre-trained image processing transformer (Chen et al., CVPR 2021), as in the official PyTorch release.

Multi-head / multi-tail layout: one CNN head, one tail and one task embedding per task, one shared transformer
encoder-decoder body over 3x3 patches of the 48x48 feature map. Parameter names and order follow
``huawei-noah/Pretrained-IPT`` (``model/ipt.py``, ``model/common.py``) so that its checkpoints load with
``strict=True``.

Canonical task order of the six-task pre-training model (``--scale 2+3+4+1+1+1``):
0 SR x2, 1 SR x3, 2 SR x4, 3 deraining, 4 denoising sigma 30, 5 denoising sigma 50.
"""
import copy
import math
from types import SimpleNamespace

import torch
import torch.nn as nn
import torch.nn.functional as F

DIV2K_MEAN = (0.4488, 0.4371, 0.4040)


# ----------------------------------------------------------------------------------------- EDSR-style pieces
def default_conv(in_channels, out_channels, kernel_size, bias=True):
    """Conv with "same" padding (k // 2) and a bias."""
    return nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=bias)


class MeanShift(nn.Conv2d):
    """Frozen 1x1 conv adding (``sign=1``) or subtracting (``sign=-1``) ``rgb_range * mean`` per channel."""

    def __init__(self, rgb_range, rgb_mean=DIV2K_MEAN, rgb_std=(1.0, 1.0, 1.0), sign=-1):
        super().__init__(3, 3, kernel_size=1)
        std = torch.tensor(rgb_std, dtype=torch.float32, device='cpu')
        with torch.no_grad():
            self.weight.copy_(torch.eye(3, device='cpu').view(3, 3, 1, 1) / std.view(3, 1, 1, 1))
            self.bias.copy_(sign * rgb_range * torch.tensor(rgb_mean, dtype=torch.float32, device='cpu') / std)
        for p in self.parameters():
            p.requires_grad = False


class ResBlock(nn.Module):
    """``x + conv(act(conv(x))) * res_scale`` (keys ``body.0`` and ``body.2``)."""

    def __init__(self, conv, n_feats, kernel_size, bias=True, act=None, res_scale=1):
        super().__init__()
        self.body = nn.Sequential(conv(n_feats, n_feats, kernel_size, bias=bias), act or nn.ReLU(True),
                                  conv(n_feats, n_feats, kernel_size, bias=bias))
        self.res_scale = res_scale

    def forward(self, x):
        return self.body(x).mul(self.res_scale) + x


class Upsampler(nn.Sequential):
    """Sub-pixel upsampler: ``conv3x3(C -> 4C) + PixelShuffle(2)`` per factor 2, ``conv3x3(C -> 9C) +
    PixelShuffle(3)`` for x3, empty for x1."""

    def __init__(self, conv, scale, n_feats, bias=True):
        m = []
        if scale & (scale - 1) == 0:
            for _ in range(int(math.log2(scale))):
                m += [conv(n_feats, 4 * n_feats, 3, bias), nn.PixelShuffle(2)]
        elif scale == 3:
            m += [conv(n_feats, 9 * n_feats, 3, bias), nn.PixelShuffle(3)]
        else:
            raise ValueError(f'unsupported upscaling factor {scale} (use 1, 2, 3, 4, 8, ...)')
        super().__init__(*m)


# ------------------------------------------------------------------------------------------------ the body
class LearnedPositionalEncoding(nn.Module):
    """One learned vector per token position (``pe``), returned as ``[1, N, D]``."""

    def __init__(self, max_position_embeddings, embedding_dim, seq_length):
        super().__init__()
        self.pe = nn.Embedding(max_position_embeddings, embedding_dim)
        self.seq_length = seq_length
        self.register_buffer('position_ids', torch.arange(seq_length).expand((1, -1)))

    def forward(self, x=None, position_ids=None):
        if position_ids is None:
            position_ids = self.position_ids[:, :self.seq_length]
        return self.pe(position_ids)


class TransformerEncoderLayer(nn.Module):
    """Pre-norm layer: ``x + MHA(LN1 x (+pos as q, k))``, then ``x + FFN(LN2 x)``; bias-free attention."""

    def __init__(self, d_model, nhead, dim_feedforward=2048, dropout=0.1, no_norm=False):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout, bias=False)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model) if not no_norm else nn.Identity()
        self.norm2 = nn.LayerNorm(d_model) if not no_norm else nn.Identity()
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        nn.init.kaiming_uniform_(self.self_attn.in_proj_weight, a=math.sqrt(5))

    def forward(self, src, pos=None):
        h = self.norm1(src)
        qk = h if pos is None else h + pos
        src = src + self.dropout1(self.self_attn(qk, qk, h, need_weights=False)[0])
        h = self.norm2(src)
        return src + self.dropout2(self.linear2(self.dropout(F.relu(self.linear1(h)))))


class TransformerDecoderLayer(nn.Module):
    """Pre-norm layer: self-attention with the task embedding on q and k, cross-attention with the task
    embedding on q and the raw encoder output (not normalised) as k and v, then the FFN."""

    def __init__(self, d_model, nhead, dim_feedforward=2048, dropout=0.1, no_norm=False):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout, bias=False)
        self.multihead_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout, bias=False)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model) if not no_norm else nn.Identity()
        self.norm2 = nn.LayerNorm(d_model) if not no_norm else nn.Identity()
        self.norm3 = nn.LayerNorm(d_model) if not no_norm else nn.Identity()
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)

    @staticmethod
    def with_pos_embed(t, pos):
        return t if pos is None else t + pos

    def forward(self, tgt, memory, pos=None, query_pos=None):
        h = self.norm1(tgt)
        qk = self.with_pos_embed(h, query_pos)
        tgt = tgt + self.dropout1(self.self_attn(qk, qk, value=h, need_weights=False)[0])
        h = self.norm2(tgt)
        tgt = tgt + self.dropout2(self.multihead_attn(query=self.with_pos_embed(h, query_pos),
                                                      key=self.with_pos_embed(memory, pos), value=memory,
                                                      need_weights=False)[0])
        h = self.norm3(tgt)
        return tgt + self.dropout3(self.linear2(self.dropout(F.relu(self.linear1(h)))))


def _clones(module, n):
    return nn.ModuleList([copy.deepcopy(module) for _ in range(n)])


class TransformerEncoder(nn.Module):
    def __init__(self, encoder_layer, num_layers):
        super().__init__()
        self.layers = _clones(encoder_layer, num_layers)
        self.num_layers = num_layers

    def forward(self, src, pos=None):
        for layer in self.layers:
            src = layer(src, pos=pos)
        return src


class TransformerDecoder(nn.Module):
    def __init__(self, decoder_layer, num_layers):
        super().__init__()
        self.layers = _clones(decoder_layer, num_layers)
        self.num_layers = num_layers

    def forward(self, tgt, memory, pos=None, query_pos=None):
        for layer in self.layers:
            tgt = layer(tgt, memory, pos=pos, query_pos=query_pos)
        return tgt


class VisionTransformer(nn.Module):
    """The shared body: patchify 3x3 windows into ``N = (img_dim / patch_dim)^2`` tokens of ``P^2 C`` dims
    (order channel, row, col), token-linear residual, learned position embedding on the encoder input,
    encoder, decoder with the per-token task embedding ``query_embed[query_idx]``, residual MLP, fold back.

    ``mlp=True`` is the official ``--no_mlp`` switch (no token linear, residual MLP or task embedding)."""

    def __init__(self, img_dim, patch_dim, num_channels, embedding_dim, num_heads, num_layers, hidden_dim,
                 num_queries, positional_encoding_type='learned', dropout_rate=0, no_norm=False, mlp=False,
                 pos_every=False, no_pos=False):
        super().__init__()
        if embedding_dim % num_heads:
            raise ValueError(f'embedding_dim {embedding_dim} is not divisible by num_heads {num_heads}')
        if img_dim % patch_dim:
            raise ValueError(f'patch_size {img_dim} is not divisible by patch_dim {patch_dim}')
        if positional_encoding_type != 'learned':
            raise ValueError('only the learned positional encoding exists in IPT')
        self.no_norm, self.mlp, self.pos_every, self.no_pos = no_norm, mlp, pos_every, no_pos
        self.embedding_dim, self.num_heads = embedding_dim, num_heads
        self.patch_dim, self.num_channels, self.img_dim = patch_dim, num_channels, img_dim
        self.num_patches = self.seq_length = (img_dim // patch_dim) ** 2
        self.flatten_dim = self.out_dim = patch_dim * patch_dim * num_channels

        if not mlp:
            self.linear_encoding = nn.Linear(self.flatten_dim, embedding_dim)
            self.mlp_head = nn.Sequential(nn.Linear(embedding_dim, hidden_dim), nn.Dropout(dropout_rate), nn.ReLU(),
                                          nn.Linear(hidden_dim, self.out_dim), nn.Dropout(dropout_rate))
            self.query_embed = nn.Embedding(num_queries, embedding_dim * self.seq_length)
        self.encoder = TransformerEncoder(
            TransformerEncoderLayer(embedding_dim, num_heads, hidden_dim, dropout_rate, no_norm), num_layers)
        self.decoder = TransformerDecoder(
            TransformerDecoderLayer(embedding_dim, num_heads, hidden_dim, dropout_rate, no_norm), num_layers)
        if not no_pos:
            self.position_encoding = LearnedPositionalEncoding(self.seq_length, embedding_dim, self.seq_length)
        self.dropout_layer1 = nn.Dropout(dropout_rate)
        if no_norm:
            for m in self.modules():
                if isinstance(m, nn.Linear):
                    nn.init.normal_(m.weight, std=1 / m.weight.size(1))

    def patchify(self, x):
        """``[B, C, H, W] -> [N, B, P^2 C]`` (sequence first, raster order over the patch grid)."""
        return F.unfold(x, self.patch_dim, stride=self.patch_dim).permute(2, 0, 1).contiguous()

    def unpatchify(self, tokens):
        """``[B, N, P^2 C] -> [B, C, H, W]``, the inverse of :meth:`patchify`."""
        return F.fold(tokens.transpose(1, 2).contiguous(), self.img_dim, self.patch_dim, stride=self.patch_dim)

    def forward(self, x, query_idx, con=False):
        if x.shape[-2:] != (self.img_dim, self.img_dim):
            raise ValueError(f'the IPT body takes {self.img_dim}x{self.img_dim} inputs (got {tuple(x.shape[-2:])});'
                             ' tile larger images with chop.forward_chop')
        x = self.patchify(x)
        query_embed = None
        if not self.mlp:
            x = self.dropout_layer1(self.linear_encoding(x)) + x
            query_embed = self.query_embed.weight[query_idx].view(-1, 1, self.embedding_dim).expand(-1, x.size(1), -1)
        pos = None if self.no_pos else self.position_encoding(x).transpose(0, 1)
        if self.pos_every:
            x = self.encoder(x, pos=pos)
            x = self.decoder(x, x, pos=pos, query_pos=query_embed)
        else:
            x = self.encoder(x if pos is None else x + pos)
            x = self.decoder(x, x, query_pos=query_embed)
        if not self.mlp:
            x = self.mlp_head(x) + x
        tokens = x.transpose(0, 1).contiguous()  # [B, N, P^2 C]
        out = self.unpatchify(tokens)
        return (out, tokens) if con else out


# ---------------------------------------------------------------------------------------------- the model
class IPT(nn.Module):
    """``forward(x, task)``: mean shift, head[task], body (task embedding ``task``) + global skip, tail[task],
    mean back. ``x`` is ``[B, 3, patch_size, patch_size]`` on the [0, rgb_range] scale; the output is
    ``[B, 3, s * patch_size, s * patch_size]`` with ``s = scales[task]`` (not clamped)."""

    def __init__(self, n_colors=3, n_feats=64, patch_size=48, patch_dim=3, num_heads=12, num_layers=12,
                 scales=(2, 3, 4, 1, 1, 1), num_queries=6, dropout_rate=0.0, rgb_range=255, no_mlp=False,
                 pos_every=False, no_pos=False, no_norm=False, conv=default_conv):
        super().__init__()
        self.scales, self.patch_size, self.scale_idx = list(scales), patch_size, 0
        self.sub_mean = MeanShift(rgb_range)
        self.add_mean = MeanShift(rgb_range, sign=1)
        self.head = nn.ModuleList([
            nn.Sequential(conv(n_colors, n_feats, 3), ResBlock(conv, n_feats, 5, act=nn.ReLU(True)),
                          ResBlock(conv, n_feats, 5, act=nn.ReLU(True)))
            for _ in self.scales])
        dim = n_feats * patch_dim * patch_dim
        self.body = VisionTransformer(img_dim=patch_size, patch_dim=patch_dim, num_channels=n_feats,
                                      embedding_dim=dim, num_heads=num_heads, num_layers=num_layers,
                                      hidden_dim=dim * 4, num_queries=num_queries, dropout_rate=dropout_rate,
                                      mlp=no_mlp, pos_every=pos_every, no_pos=no_pos, no_norm=no_norm)
        self.tail = nn.ModuleList([nn.Sequential(Upsampler(conv, s, n_feats), conv(n_feats, n_colors, 3))
                                   for s in self.scales])
        self.num_queries = num_queries

    def set_scale(self, scale_idx):
        """The official stateful task selector used by ``forward(x)`` without ``task``."""
        self.scale_idx = scale_idx

    def forward(self, x, task=None, return_tokens=False):
        t = self.scale_idx if task is None else task
        if not 0 <= t < len(self.scales):
            raise ValueError(f'task index {t} out of range for a model with {len(self.scales)} tasks')
        x = self.head[t](self.sub_mean(x))
        res, tokens = self.body(x, t, con=True)
        y = self.add_mean(self.tail[t](res + x))
        return (y, tokens) if return_tokens else y


def ipt(args, conv=default_conv):
    """Build IPT from an ``option.py``-style namespace (``args.scale`` a list, ``args.no_mlp`` ...)."""
    g = lambda k, d: getattr(args, k, d)  # noqa: E731
    return IPT(n_colors=g('n_colors', 3), n_feats=g('n_feats', 64), patch_size=g('patch_size', 48),
               patch_dim=g('patch_dim', 3), num_heads=g('num_heads', 12), num_layers=g('num_layers', 12),
               scales=g('scale', [2]), num_queries=g('num_queries', 1), dropout_rate=g('dropout_rate', 0.0),
               rgb_range=g('rgb_range', 255), no_mlp=g('no_mlp', False), pos_every=g('pos_every', False),
               no_pos=g('no_pos', False), no_norm=g('no_norm', False), conv=conv)


def make_model(args, parent=False):
    return ipt(args)


def official_args(scale=(2,), num_queries=1, **kw):
    """The official ``option.py`` defaults as a namespace (for :func:`ipt`)."""
    d = dict(n_colors=3, n_feats=64, patch_size=48, patch_dim=3, num_heads=12, num_layers=12, scale=list(scale),
             num_queries=num_queries, dropout_rate=0.0, rgb_range=255, no_mlp=False, pos_every=False,
             no_pos=False, no_norm=False)
    d.update(kw)
    return SimpleNamespace(**d)
