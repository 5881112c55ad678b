"""LightViT: light-weight convolution-free vision transformers (Huang et al., arXiv 2207.05557).

Three hierarchical stages of convolution-free blocks on top of a small convolutional stem.
Two pieces replace the local mixing of convolutions:

* ``LightViTAttention``: local window attention among image tokens, plus a few learnable
  *global tokens* that aggregate information from every image token and broadcast it back.
* ``BiAttn`` inside the FFN: a channel gate and a spatial (per-token) gate, both sigmoid-valued,
  rescale the FFN output.

Module and parameter names follow the official ``lib/models/lightvit.py`` so that the released
checkpoints load with ``strict=True``. Only torch is imported.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ['ConvStem', 'BiAttn', 'BiAttnMlp', 'LightViTAttention', 'Block', 'ResidualMergePatch',
           'LightViT', 'lightvit_tiny', 'lightvit_small', 'lightvit_base', 'ARCHS',
           'window_partition', 'window_reverse', 'get_relative_position_index']


class DropPath(nn.Module):
    """Stochastic depth: drop the residual branch of a whole sample with probability ``drop_prob``."""

    def __init__(self, drop_prob=0.):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x):
        if self.drop_prob == 0. or not self.training:
            return x
        keep = 1. - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep


class ConvStem(nn.Module):
    """Convolutional stem of output stride 8 followed by a token LayerNorm.

    conv3x3 s2 -> BN -> GELU -> dw3x3 s1 -> BN -> GELU -> dw3x3 s1 -> BN -> GELU -> dw3x3 s2 -> BN
    -> GELU, then ``proj`` (conv3x3 s2, with bias) to ``embed_dim`` and LayerNorm over channels.
    """

    def __init__(self, img_size=224, patch_size=8, in_chans=3, embed_dim=64):
        super().__init__()
        if patch_size != 8:
            raise ValueError(f'ConvStem has a fixed output stride of 8, got patch_size={patch_size}')
        self.img_size = img_size
        self.patch_size = patch_size
        stem_dim = embed_dim // 2
        layers = [nn.Conv2d(in_chans, stem_dim, 3, stride=2, padding=1, bias=False),
                  nn.BatchNorm2d(stem_dim), nn.GELU()]
        for stride in (1, 1, 2):  # three depthwise convs
            layers += [nn.Conv2d(stem_dim, stem_dim, 3, stride=stride, padding=1, groups=stem_dim, bias=False),
                       nn.BatchNorm2d(stem_dim), nn.GELU()]
        self.stem = nn.Sequential(*layers)  # convs at 0/3/6/9, BNs at 1/4/7/10
        self.proj = nn.Conv2d(stem_dim, embed_dim, 3, stride=2, padding=1)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x):
        x = self.proj(self.stem(x))
        H, W = x.shape[-2:]
        x = self.norm(x.flatten(2).transpose(1, 2))
        return x, (H, W)

    def flops(self, H, W):
        """Multiply-accumulates of the convolutions only (no bias, BN, GELU or LN), as the official count."""
        total = 0
        for conv in [m for m in self.stem if isinstance(m, nn.Conv2d)] + [self.proj]:
            H = (H + 2 * conv.padding[0] - conv.kernel_size[0]) // conv.stride[0] + 1
            W = (W + 2 * conv.padding[1] - conv.kernel_size[1]) // conv.stride[1] + 1
            k = conv.kernel_size[0] * conv.kernel_size[1] * (conv.in_channels // conv.groups)
            total += conv.out_channels * k * H * W
        return total


class BiAttn(nn.Module):
    """Bi-dimensional attention: ``Z * sigmoid(channel gate) * sigmoid(spatial gate)``.

    With ``Zn = LN(Z)``: ``g = act(W_gr mean_N(Zn))`` (B,1,C'), ``l = act(W_lr Zn)`` (B,N,C'),
    channel gate ``sigma(W_cs g)`` (B,1,C), spatial gate ``sigma(W_ss [l; g])`` (B,N,1). The gates
    multiply the *un-normalised* input.
    """

    def __init__(self, in_channels, act_ratio=0.25, act_fn=nn.GELU, gate_fn=nn.Sigmoid):
        super().__init__()
        reduce_channels = int(in_channels * act_ratio)
        self.norm = nn.LayerNorm(in_channels)
        self.global_reduce = nn.Linear(in_channels, reduce_channels)
        self.local_reduce = nn.Linear(in_channels, reduce_channels)
        self.act_fn = act_fn()
        self.channel_select = nn.Linear(reduce_channels, in_channels)
        self.spatial_select = nn.Linear(reduce_channels * 2, 1)
        self.gate_fn = gate_fn()

    def forward(self, x):
        z = self.norm(x)
        g = self.act_fn(self.global_reduce(z.mean(1, keepdim=True)))  # [B, 1, C']
        l = self.act_fn(self.local_reduce(z))                          # [B, N, C']
        c_attn = self.gate_fn(self.channel_select(g))                  # [B, 1, C]
        s_attn = self.gate_fn(self.spatial_select(torch.cat([l, g.expand(-1, x.shape[1], -1)], dim=-1)))  # [B, N, 1]
        return x * (c_attn * s_attn)


class BiAttnMlp(nn.Module):
    """FFN: fc1 -> act -> drop -> fc2 -> BiAttn -> drop."""

    def __init__(self, in_features, hidden_features=None, out_features=None, act_layer=nn.GELU, drop=0.):
        super().__init__()
        out_features = out_features or in_features
        hidden_features = hidden_features or in_features
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden_features, out_features)
        self.attn = BiAttn(out_features)
        self.drop = nn.Dropout(drop) if drop > 0 else nn.Identity()

    def forward(self, x):
        x = self.drop(self.act(self.fc1(x)))
        return self.drop(self.attn(self.fc2(x)))


def get_relative_position_index(win_h, win_w):
    """Swin relative-position index: ``(dy + win_h - 1) * (2 win_w - 1) + (dx + win_w - 1)``, shape [win_h*win_w]^2."""
    coords = torch.stack(torch.meshgrid(torch.arange(win_h), torch.arange(win_w), indexing='ij')).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)  # [A, A, 2] offsets (dy, dx)
    return (rel[..., 0] + win_h - 1) * (2 * win_w - 1) + (rel[..., 1] + win_w - 1)


def window_partition(t, H, W, ws):
    """[B, heads, H*W, d] (row-major grid) -> [B * num_windows, heads, ws*ws, d]."""
    B, h, _, d = t.shape
    t = t.view(B, h, H // ws, ws, W // ws, ws, d).permute(0, 2, 4, 1, 3, 5, 6)
    return t.reshape(-1, h, ws * ws, d)


def window_reverse(windows, original_size, window_size=(7, 7)):
    """[B * num_windows, ws_h*ws_w, C] -> [B, H*W, C] in row-major grid order."""
    H, W = original_size
    wh, ww = window_size
    B = windows.shape[0] // ((H // wh) * (W // ww))
    out = windows.view(B, H // wh, W // ww, wh, ww, -1).permute(0, 1, 3, 2, 4, 5)
    return out.reshape(B, H * W, -1)


class LightViTAttention(nn.Module):
    """Local window attention + global-token aggregation and broadcast.

    Input ``[B, NT + H*W, C]`` with the NT global tokens first. One ``qkv`` Linear serves all tokens;
    the global tokens' own keys and values are unused.

    * local:       ``Y_loc = softmax(s Q_i K_i^T + B_rel) V_i`` inside non-overlapping ws x ws windows;
    * aggregation: ``Y_g = softmax(s Q_g K_i^T) V_i`` over all image tokens;
    * broadcast:   ``K_g, V_g = kv_global(Y_g)``, ``Y_b = softmax(s Q_i K_g^T) V_g``;
    * output:      ``proj([Y_g ; Y_loc + Y_b])``.
    """

    def __init__(self, dim, num_tokens=1, num_heads=8, window_size=7, qkv_bias=False, qk_scale=None,
                 attn_drop=0., proj_drop=0.):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f'dim {dim} is not divisible by num_heads {num_heads}')
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.num_tokens = num_tokens
        self.window_size = window_size
        self.attn_area = window_size * window_size
        self.scale = qk_scale or head_dim ** -0.5

        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.kv_global = nn.Linear(dim, dim * 2, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop) if attn_drop > 0 else nn.Identity()
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop) if proj_drop > 0 else nn.Identity()

        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        # stored flat ([ws^4]) as in the official state_dict
        self.register_buffer('relative_position_index',
                             get_relative_position_index(window_size, window_size).view(-1))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=.02, a=-2., b=2.)

    def _get_relative_positional_bias(self):
        """[1, heads, ws*ws, ws*ws] bias gathered from the table."""
        bias = self.relative_position_bias_table[self.relative_position_index]
        return bias.view(self.attn_area, self.attn_area, -1).permute(2, 0, 1).unsqueeze(0)

    def _attend(self, q, k, v, bias=None):
        """softmax(s q k^T [+ bias]) v with the scale multiplied into q. [.., h, Nq, d] -> [.., h, Nq, d]."""
        attn = (q * self.scale) @ k.transpose(-2, -1)
        if bias is not None:
            attn = attn + bias
        return self.attn_drop(attn.softmax(dim=-1)) @ v

    @staticmethod
    def _merge_heads(x):
        """[B, h, N, d] -> [B, N, h*d]."""
        B, h, N, d = x.shape
        return x.transpose(1, 2).reshape(B, N, h * d)

    def forward_global_aggregation(self, q, k, v):
        """q: global tokens; k, v: image tokens -> [B, NT, C]."""
        return self._merge_heads(self._attend(q, k, v))

    def forward_local(self, q, k, v, H, W):
        """q, k, v: image tokens [B, h, H*W, d] -> window attention output [B, H*W, C]."""
        ws = self.window_size
        if H % ws or W % ws:
            raise ValueError(f'token grid {H}x{W} is not a multiple of the window size {ws}; '
                             f'use an input side that is a multiple of {8 * ws} at the first stage')
        qw, kw, vw = (window_partition(t, H, W, ws) for t in (q, k, v))
        x = self._merge_heads(self._attend(qw, kw, vw, self._get_relative_positional_bias()))
        return window_reverse(x, (H, W), (ws, ws))

    def forward_global_broadcast(self, q, k, v):
        """q: image tokens; k, v: global tokens -> [B, H*W, C]."""
        return self._merge_heads(self._attend(q, k, v))

    def forward(self, x, H, W):
        B, N, C = x.shape
        NT, h = self.num_tokens, self.num_heads
        q, k, v = self.qkv(x).view(B, N, 3, h, C // h).permute(2, 0, 3, 1, 4).unbind(0)  # each [B, h, N, d]
        q_glb = q[:, :, :NT]
        q_img, k_img, v_img = q[:, :, NT:], k[:, :, NT:], v[:, :, NT:]

        x_img = self.forward_local(q_img, k_img, v_img, H, W)
        x_glb = self.forward_global_aggregation(q_glb, k_img, v_img)
        k_glb, v_glb = self.kv_global(x_glb).view(B, NT, 2, h, C // h).permute(2, 0, 3, 1, 4).unbind(0)
        x_img = x_img + self.forward_global_broadcast(q_img, k_glb, v_glb)

        return self.proj_drop(self.proj(torch.cat([x_glb, x_img], dim=1)))


class Block(nn.Module):
    """Pre-norm transformer block: x + DropPath(Attn(LN(x))), then x + DropPath(BiAttnMlp(LN(x)))."""

    def __init__(self, dim, num_heads, num_tokens=1, window_size=7, mlp_ratio=4., qkv_bias=False, drop=0.,
                 attn_drop=0., drop_path=0., act_layer=nn.GELU, norm_layer=nn.LayerNorm):
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = LightViTAttention(dim, num_tokens=num_tokens, num_heads=num_heads, window_size=window_size,
                                      qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = BiAttnMlp(dim, hidden_features=int(dim * mlp_ratio), act_layer=act_layer, drop=drop)

    def forward(self, x, H, W):
        x = x + self.drop_path(self.attn(self.norm1(x), H, W))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class ResidualMergePatch(nn.Module):
    """Down-sampling between stages, ``dim -> out_dim``, grid H x W -> H/2 x W/2.

    image tokens: ``reduction(LN(cat[x00, x10, x01, x11])) + res_proj(maxpool2x2(x))``;
    global tokens: ``proj(LN(g))``. The three Linear layers have no bias.
    """

    def __init__(self, dim, out_dim, num_tokens=1):
        super().__init__()
        self.num_tokens = num_tokens
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, out_dim, bias=False)
        self.norm2 = nn.LayerNorm(dim)
        self.proj = nn.Linear(dim, out_dim, bias=False)
        self.res_proj = nn.Linear(dim, out_dim, bias=False)

    def forward(self, x, H, W):
        g, x = x[:, :self.num_tokens], x[:, self.num_tokens:]
        B, L, C = x.shape
        if L != H * W or H % 2 or W % 2:
            raise ValueError(f'cannot merge {L} tokens as an even {H}x{W} grid')
        x = x.reshape(B, H, W, C)
        res = F.max_pool2d(x.permute(0, 3, 1, 2), 2, 2).flatten(2).transpose(1, 2)  # [B, HW/4, C]
        # row offset varies first: (0,0), (1,0), (0,1), (1,1)
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        x = self.reduction(self.norm(x.reshape(B, -1, 4 * C))) + self.res_proj(res)
        g = self.proj(self.norm2(g))
        return torch.cat([g, x], dim=1), (H // 2, W // 2)


def _init_vit_weights(module):
    """Official init: trunc_normal(0.02) Linear weights and zero biases; norms to (1, 0); convs keep defaults."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=.02, a=-2., b=2.)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm2d)):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class LightViT(nn.Module):
    """Stem -> global tokens -> stages (merge + blocks) -> LN -> per-token neck -> mean over all tokens -> head."""

    def __init__(self, img_size=224, patch_size=8, in_chans=3, num_classes=1000, embed_dims=(64, 128, 256),
                 num_layers=(2, 6, 6), num_heads=(2, 4, 8), mlp_ratios=(8, 4, 4), num_tokens=8, window_size=7,
                 neck_dim=1280, qkv_bias=True, drop_rate=0., attn_drop_rate=0., drop_path_rate=0.):
        super().__init__()
        if not len(embed_dims) == len(num_layers) == len(num_heads) == len(mlp_ratios):
            raise ValueError('embed_dims, num_layers, num_heads and mlp_ratios need one entry per stage')
        self.num_classes = num_classes
        self.embed_dims = list(embed_dims)
        self.num_layers = list(num_layers)
        self.mlp_ratios = list(mlp_ratios)
        self.num_tokens = num_tokens
        self.patch_size = patch_size
        self.window_size = window_size
        self.img_size = img_size
        norm_layer = lambda d: nn.LayerNorm(d, eps=1e-6)  # noqa: E731  blocks and final norm

        self.patch_embed = ConvStem(img_size=img_size, patch_size=patch_size, in_chans=in_chans,
                                    embed_dim=embed_dims[0])
        self.global_token = nn.Parameter(torch.zeros(1, num_tokens, embed_dims[0]))

        dpr = torch.linspace(0, drop_path_rate, sum(num_layers)).tolist()  # blocks only, merges excluded
        stages = []
        for s, (dim, depth, heads, ratio) in enumerate(zip(embed_dims, num_layers, num_heads, mlp_ratios)):
            mods = [ResidualMergePatch(embed_dims[s - 1], dim, num_tokens=num_tokens)] if s > 0 else []
            mods += [Block(dim, heads, num_tokens=num_tokens, window_size=window_size, mlp_ratio=ratio,
                           qkv_bias=qkv_bias, drop=drop_rate, attn_drop=attn_drop_rate,
                           drop_path=dpr[sum(num_layers[:s]) + i], norm_layer=norm_layer)
                     for i in range(depth)]
            stages.append(nn.Sequential(*mods))
        self.stages = nn.Sequential(*stages)

        self.norm = norm_layer(embed_dims[-1])
        self.neck = nn.Sequential(nn.Linear(embed_dims[-1], neck_dim), nn.LayerNorm(neck_dim), nn.GELU())
        self.head = nn.Linear(neck_dim, num_classes) if num_classes > 0 else nn.Identity()
        self.init_weights()

    def init_weights(self):
        nn.init.trunc_normal_(self.global_token, std=.02, a=-2., b=2.)
        self.apply(_init_vit_weights)

    @torch.jit.ignore
    def no_weight_decay(self):
        return {'global_token', '[g]relative_position_bias_table'}

    def forward_stages(self, x):
        """Token sequences ``[B, NT + H*W, C]`` after each stage (global tokens first)."""
        x, (H, W) = self.patch_embed(x)
        x = torch.cat([self.global_token.expand(x.shape[0], -1, -1), x], dim=1)
        outs = []
        for stage in self.stages:
            for blk in stage:
                if isinstance(blk, ResidualMergePatch):
                    x, (H, W) = blk(x, H, W)
                else:
                    x = blk(x, H, W)
            outs.append(x)
        return outs

    def forward_features(self, x):
        """[B, 3, H, W] -> [B, neck_dim]: final LN, per-token neck, then the mean over all tokens."""
        x = self.forward_stages(x)[-1]
        return self.neck(self.norm(x)).mean(1)

    def forward(self, x):
        return self.head(self.forward_features(x))

    def flops(self, input_shape=(3, 224, 224)):
        """Official analytic multiply-accumulate count (the paper's FLOPs column).

        It counts the local window attention as ``2 HW C`` (the window area is left out, as in the
        official formula) and has no term for ``kv_global``; torch's own counter is ~5% higher.
        """
        total = self.patch_embed.flops(input_shape[1], input_shape[2])
        H, W = input_shape[1] // self.patch_size, input_shape[2] // self.patch_size
        NT, ws, r = self.num_tokens, self.window_size, 0.25
        N = NT + H * W
        for s, C in enumerate(self.embed_dims):
            if s > 0:
                C_in = self.embed_dims[s - 1]
                total += (H // 2) * (W // 2) * C_in * C * 5 + NT * C_in * C  # reduction (4x) + residual, global proj
                H, W = H // 2, W // 2
                N = NT + H * W
            per_block = (4 * N * C * C                               # qkv + proj on all tokens
                         + (H // ws) * (W // ws) * ws * ws * C * 2   # local window attention (official term)
                         + 4 * H * W * NT * C                        # global aggregation + broadcast
                         + 2 * N * C * C * self.mlp_ratios[s]        # fc1 + fc2
                         + C * C * r * 2                             # BiAttn channel branch
                         + N * C * C * r + N * C * r * 2             # BiAttn spatial branch
                         + N * C)                                    # gating product
            total += per_block * self.num_layers[s]
        neck_dim = self.neck[0].out_features
        total += N * self.embed_dims[-1] * neck_dim + neck_dim * self.num_classes
        return int(round(total))


ARCHS = {
    'lightvit_tiny': dict(embed_dims=[64, 128, 256], num_layers=[2, 6, 6], num_heads=[2, 4, 8],
                          mlp_ratios=[8, 4, 4], num_tokens=8),
    'lightvit_small': dict(embed_dims=[96, 192, 384], num_layers=[2, 6, 6], num_heads=[3, 6, 12],
                           mlp_ratios=[8, 4, 4], num_tokens=16),
    'lightvit_base': dict(embed_dims=[128, 256, 512], num_layers=[3, 8, 6], num_heads=[4, 8, 16],
                          mlp_ratios=[8, 4, 4], num_tokens=24),
}


def lightvit_tiny(**kwargs):
    """LightViT-T: 9.4M params, 0.7G FLOPs, 78.7% ImageNet top-1."""
    return LightViT(patch_size=8, **{**ARCHS['lightvit_tiny'], **kwargs})


def lightvit_small(**kwargs):
    """LightViT-S: 19.2M params, 1.7G FLOPs, 80.9% ImageNet top-1."""
    return LightViT(patch_size=8, **{**ARCHS['lightvit_small'], **kwargs})


def lightvit_base(**kwargs):
    """LightViT-B: 35.2M params, 3.9G FLOPs, 82.1% ImageNet top-1."""
    return LightViT(patch_size=8, **{**ARCHS['lightvit_base'], **kwargs})
