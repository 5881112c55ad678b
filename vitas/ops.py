"""Dynamic (sliceable) ViT operators of the ViTAS super-transformer.

Every shared tensor is sliced as one contiguous block (or, for the v2 ``cyclic`` scheme, gathered
with an index tensor).  A *side* says which block:

* ``'left'``  -- rows ``[0, n)`` (and input columns ``[0, in)``),
* ``'right'`` -- rows ``[N_max - n, N_max)`` (and input columns ``[I_max - in, I_max)``),
* a ``LongTensor`` -- exactly these indices (used for the embedding channels of ``cyclic``).

With full widths every operator is the plain one, so the same classes build the stand-alone
(retrain) models: their ``state_dict`` keys are those of ``nn.Linear`` / ``nn.Conv2d`` /
``nn.LayerNorm``.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F


def select(t, dim, n, side):
    """The ``n`` entries of ``t`` along ``dim`` picked by ``side`` (see the module docstring)."""
    if torch.is_tensor(side):
        if side.numel() != n:
            raise ValueError(f'index side has {side.numel()} entries, width is {n}')
        return t.index_select(dim, side.to(t.device))
    full = t.shape[dim]
    if n == full:
        return t
    if not 0 < n <= full:
        raise ValueError(f'width {n} outside (0, {full}]')
    if side == 'left':
        return t.narrow(dim, 0, n)
    if side == 'right':
        return t.narrow(dim, full - n, n)
    raise ValueError(f"side must be 'left', 'right' or an index tensor, got {side!r}")


def width(full, ratio):
    """``round(full * ratio)`` with Python rounding (Pitfall 5); ``ratio=None`` is full width."""
    return full if ratio is None else int(round(full * ratio))


def _side_width(side, default):
    return side.numel() if torch.is_tensor(side) else default


class DropPath(nn.Module):
    """Stochastic depth per sample (identity at rate 0 or in eval mode)."""

    def __init__(self, drop_prob=0.):
        super().__init__()
        self.drop_prob = float(drop_prob)

    def forward(self, x):
        if self.drop_prob == 0. or not self.training:
            return x
        keep = 1 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self):
        return f'drop_prob={self.drop_prob}'


class DynamicLinear(nn.Linear):
    """``nn.Linear`` whose output rows (``side``) and input columns (``in_side``) can be sliced."""

    def sliced(self, out_n=None, in_n=None, side='left', in_side=None):
        """(weight, bias) of the ``out_n x in_n`` sub-matrix."""
        in_side = side if in_side is None else in_side
        out_n = _side_width(side, self.out_features if out_n is None else out_n)
        in_n = _side_width(in_side, self.in_features if in_n is None else in_n)
        w = select(select(self.weight, 0, out_n, side), 1, in_n, in_side)
        b = None if self.bias is None else select(self.bias, 0, out_n, side)
        return w, b

    def forward(self, x, out_ratio=None, side='left', in_side=None, out_features=None):
        out_n = out_features if out_features is not None else width(self.out_features, out_ratio)
        w, b = self.sliced(out_n, x.shape[-1], side, in_side)
        return F.linear(x, w, b)


class DynamicConv2d(nn.Conv2d):
    """``nn.Conv2d`` (patch projection) with sliced output channels; input channels stay full."""

    def __init__(self, in_ch, out_ch, kernel_size, stride):
        super().__init__(in_ch, out_ch, kernel_size, stride=stride)

    def sliced(self, out_n=None, side='left'):
        out_n = _side_width(side, self.out_channels if out_n is None else out_n)
        return select(self.weight, 0, out_n, side), select(self.bias, 0, out_n, side)

    def forward(self, x, out_ratio=None, side='left'):
        w, b = self.sliced(width(self.out_channels, out_ratio), side)
        return F.conv2d(x, w, b, self.stride)


class DynamicLayerNorm(nn.LayerNorm):
    """LayerNorm whose affine parameters are sliced to the width of the input."""

    def __init__(self, dim, eps=1e-6):
        super().__init__(dim, eps=eps)

    def sliced(self, n, side='left'):
        return select(self.weight, 0, n, side), select(self.bias, 0, n, side)

    def forward(self, x, side='left'):
        n = x.shape[-1]
        w, b = self.sliced(n, side)
        return F.layer_norm(x, (n,), w, b, self.eps)


class Patch_init(nn.Module):
    """Token embedding of one patch size: conv projection, class token and position table.

    In the supernet there is one ``Patch_init`` per candidate patch size, i.e. a *private* class
    token (and projection / position table) per sequence length.
    """

    def __init__(self, img_size=224, patch_size=16, in_chans=3, embed_dim=384):
        super().__init__()
        if img_size % patch_size:
            raise ValueError(f'image size {img_size} is not a multiple of patch size {patch_size}')
        self.img_size, self.patch_size, self.embed_dim = img_size, patch_size, embed_dim
        self.num_patches = (img_size // patch_size) ** 2
        self.proj = DynamicConv2d(in_chans, embed_dim, patch_size, patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.num_patches + 1, embed_dim))

    def forward(self, x, out_ratio=None, side=None, pos_last_row=False):
        """``side=None``: the plain embedding.  ``pos_last_row=True`` reproduces the official
        supernet bug (Pitfall 1): only row -1 of the position table is added to every token."""
        if x.shape[-2:] != (self.img_size, self.img_size):
            raise ValueError(f'input is {tuple(x.shape[-2:])}, the embedding expects '
                             f'{self.img_size}x{self.img_size}')
        x = self.proj(x, out_ratio, 'left' if side is None else side)
        x = x.flatten(2).transpose(1, 2)
        d = x.shape[-1]
        cls = select(self.cls_token, 2, d, 'left' if side is None else side)
        pos = select(self.pos_embed, 2, d, 'left' if side is None else side)
        if pos_last_row and side is not None:
            pos = pos[:, -1:, :]
        x = torch.cat([cls.expand(x.shape[0], -1, -1), x], dim=1)
        return x + pos


class Attention(nn.Module):
    """Multi-head self-attention with sliceable projections.

    ``qkv=0``: one shared ``qkv`` Linear; ``qkv=1``: shared ``qk`` and private ``v0..v{n-1}``;
    ``qkv=2`` (ViTAS default): private ``qk0..qk{n-1}`` (one per head choice, the "private
    self-attention maps") and a shared ``v``.  The output of the chosen projections is
    ``[q | k | v]`` along channels and split contiguously per head (Pitfall 6).

    ``num_heads`` is an int (stand-alone model) or the tuple of head choices (supernet).  Scale
    quirk (Pitfall 7): supernet ``(dim // 3) ** -0.5`` for every choice, stand-alone
    ``(dim // num_heads) ** -0.5`` where ``dim`` is the *embedding* width.
    """

    def __init__(self, dim, at_temp, at_out, num_heads, qkv_bias=True, qk_scale=None, qkv=2):
        super().__init__()
        if qkv not in (0, 1, 2):
            raise ValueError(f'qkv mode must be 0, 1 or 2, got {qkv}')
        if at_temp % 3:
            raise ValueError(f'at_temp (q+k+v width) must be divisible by 3, got {at_temp}')
        self.num_heads = tuple(num_heads) if isinstance(num_heads, (list, tuple)) else int(num_heads)
        n_choices = len(self.num_heads) if isinstance(self.num_heads, tuple) else 1
        head_dim = dim // 3 if isinstance(self.num_heads, tuple) else dim // self.num_heads
        self.scale = qk_scale or head_dim ** -0.5
        self.qkv_mode, self.at_temp = qkv, at_temp
        q_max = at_temp // 3
        if qkv == 0:
            self.qkv = DynamicLinear(dim, at_temp, bias=qkv_bias)
        elif qkv == 1:
            self.qk = DynamicLinear(dim, 2 * q_max, bias=qkv_bias)
            for i in range(n_choices):
                setattr(self, f'v{i}', DynamicLinear(dim, q_max, bias=qkv_bias))
        else:
            for i in range(n_choices):
                setattr(self, f'qk{i}', DynamicLinear(dim, 2 * q_max, bias=qkv_bias))
            self.v = DynamicLinear(dim, q_max, bias=qkv_bias)
        self.proj = DynamicLinear(q_max, at_out)

    def qkv_weight(self, heads=None, at_ratio=None, in_n=None, side='left', in_side=None):
        """(weight, bias) of the q/k/v projection used by head choice ``heads`` at ratio
        ``at_ratio``: rows ``[qk_h rows | v rows]`` (qkv=2), widths ``round(2 Q r)`` and
        ``round(Q r)``."""
        q_max = self.at_temp // 3
        h = 0 if heads is None else heads
        if self.qkv_mode == 0:
            return self.qkv.sliced(width(self.at_temp, at_ratio), in_n, side, in_side)
        if self.qkv_mode == 1:
            qk, v = self.qk, getattr(self, f'v{h}')
        else:
            qk, v = getattr(self, f'qk{h}'), self.v
        wq, bq = qk.sliced(width(2 * q_max, at_ratio), in_n, side, in_side)
        wv, bv = v.sliced(width(q_max, at_ratio), in_n, side, in_side)
        b = None if bq is None else torch.cat([bq, bv])
        return torch.cat([wq, wv], 0), b

    def forward(self, x, heads=None, at_ratio=None, side='left', emb_side=None):
        emb_side = side if emb_side is None else emb_side
        B, N, D = x.shape
        w, b = self.qkv_weight(heads, at_ratio, D, side, emb_side)
        qkv = F.linear(x, w, b)
        C = qkv.shape[-1]
        H = self.num_heads[heads] if isinstance(self.num_heads, tuple) else self.num_heads
        if (C // 3) % H:
            raise ValueError(f'{H} heads do not divide the q width {C // 3}')
        q, k, v = qkv.reshape(B, N, 3, H, C // (3 * H)).permute(2, 0, 3, 1, 4)
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        x = (attn @ v).transpose(1, 2).reshape(B, N, C // 3)
        return self.proj(x, side=emb_side, in_side=side, out_features=D)


class Mlp(nn.Module):
    """Linear -> GELU -> Linear (dropout 0), hidden width sliceable."""

    def __init__(self, in_features, hidden_features, out_features):
        super().__init__()
        self.fc1 = DynamicLinear(in_features, hidden_features)
        self.act = nn.GELU()
        self.fc2 = DynamicLinear(hidden_features, out_features)

    def forward(self, x, hidden_ratio=None, side='left', emb_side=None):
        emb_side = side if emb_side is None else emb_side
        h = self.act(self.fc1(x, out_ratio=hidden_ratio, side=side, in_side=emb_side))
        return self.fc2(h, side=emb_side, in_side=side, out_features=x.shape[-1])


class Block(nn.Module):
    """Pre-norm transformer block: ``x + DropPath(Attn(LN1 x))``, ``x + DropPath(MLP(LN2 x))``.

    ``side`` slices the inner widths (q/k/v, MLP hidden), ``emb_side`` the embedding channels
    (defaults to ``side``; differs only for the cyclic scheme).
    """

    def __init__(self, dim, num_heads, at_temp, at_out, MLP_temp, MLP_out, drop_path=0., qkv=2,
                 qk_scale=None):
        super().__init__()
        self.norm1 = DynamicLayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, at_temp, at_out, num_heads, qkv_bias=True, qk_scale=qk_scale,
                              qkv=qkv)
        self.drop_path = DropPath(drop_path)
        self.norm2 = DynamicLayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, MLP_temp, MLP_out)

    def forward(self, x, heads=None, at_ratio=None, mlp_ratio=None, side='left', emb_side=None):
        emb_side = side if emb_side is None else emb_side
        x = x + self.drop_path(self.attn(self.norm1(x, emb_side), heads, at_ratio, side, emb_side))
        x = x + self.drop_path(self.mlp(self.norm2(x, emb_side), mlp_ratio, side, emb_side))
        return x


class Norm(nn.LayerNorm):
    """Final LayerNorm (eps 1e-5), sliced to the input width, then the class token."""

    def __init__(self, dim, classifier='token', eps=1e-5):
        super().__init__(dim, eps=eps)
        if classifier not in ('token', 'mean'):
            raise ValueError(f"classifier must be 'token' or 'mean', got {classifier!r}")
        self.classifier = classifier

    def forward(self, x, side='left'):
        n = x.shape[-1]
        x = F.layer_norm(x, (n,), select(self.weight, 0, n, side), select(self.bias, 0, n, side),
                         self.eps)
        return x[:, 0] if self.classifier == 'token' else x[:, 1:].mean(dim=1)


class FC(DynamicLinear):
    """Classifier: only its input columns are sliced, the class outputs stay full."""

    def __init__(self, dim_in, dim_out):
        super().__init__(dim_in, dim_out)

    def sliced_in(self, in_n, side='left'):
        return select(self.weight, 1, in_n, side), self.bias

    def forward(self, x, side='left'):
        w, b = self.sliced_in(x.shape[-1], side)
        return F.linear(x, w, b)


def init_vit_weights(module):
    """Official init: trunc-normal(0.02) on Linear weights, trunc-normal(1e-6) on Linear biases;
    convs keep PyTorch's default, LayerNorms (1, 0), class token / position table zeros."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=.02)
            if m.bias is not None:
                nn.init.trunc_normal_(m.bias, std=1e-6)


__all__ = ['select', 'width', 'DropPath', 'DynamicLinear', 'DynamicConv2d', 'DynamicLayerNorm',
           'Patch_init', 'Attention', 'Mlp', 'Block', 'Norm', 'FC', 'init_vit_weights']
