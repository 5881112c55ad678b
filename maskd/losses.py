"""MasKD losses (Huang et al., ICLR 2023, arXiv 2205.14589): receptive tokens, the Dice diversity term,
the detection stage-2 loss and the segmentation stage-2 loss, plus the head-distillation terms of the official
detection configs.

Notation (spec card): feature ``F`` of shape [N, C, H, W]; tokens ``E`` [T, C];
``A = E . F`` (pixel-wise dot product, no scaling), masks ``M = sigmoid(A)`` [N, T, H, W];
token weights ``p = softmax_t(P(F_t))`` [N, T] from a small head ``P`` (detection only).

Imports only torch: the file can be copied alone.
"""
import math
from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ['dice_coeff', 'MaskModule', 'MasKDLoss', 'SegMasKDLoss', 'HeadDistillLoss', 'extract_mask_state',
           'as_level_list']


def dice_coeff(inputs, eps=1e-12):
    """Dice coefficient between different masks of the same image, averaged.

    ``inputs`` [N, T, L] (masks flattened over H*W). For every image ``n`` and every *ordered* pair (i, j),
    i != j: ``2 <m_i, m_j> / (|m_i|^2 + |m_j|^2 + 2 eps)``; the mean is over the N*T*(T-1) terms.
    """
    if inputs.dim() != 3:
        raise ValueError(f'dice_coeff expects [N, T, L] masks, got shape {tuple(inputs.shape)}')
    n, t, _ = inputs.shape
    if t < 2:
        raise ValueError('dice_coeff needs at least two masks (num_tokens >= 2)')
    inter = torch.bmm(inputs, inputs.transpose(1, 2))                 # [N, T, T] <m_i, m_j>
    sq = (inputs * inputs).sum(-1) + eps                               # [N, T] |m_i|^2 + eps
    dice = 2 * inter / (sq.unsqueeze(2) + sq.unsqueeze(1))
    off_diag = ~torch.eye(t, dtype=torch.bool, device=inputs.device)
    return dice[:, off_diag].mean()


class MaskModule(nn.Module):
    """``T`` receptive tokens of one feature level (and, for detection, the token-weight head ``prob``).

    State-dict keys match the official release: ``mask_token`` [T, C], ``prob.0.{weight,bias}`` (conv 3x3,
    C -> C), ``prob.2.{weight,bias}`` (conv 1x1, C -> T).
    """

    def __init__(self, channels, num_tokens=6, weight_mask=True):
        super().__init__()
        if channels < 1 or num_tokens < 1:
            raise ValueError(f'channels and num_tokens must be >= 1, got {channels}, {num_tokens}')
        self.channels, self.num_tokens, self.weight_mask = int(channels), int(num_tokens), bool(weight_mask)
        self.mask_token = nn.Parameter(torch.randn(num_tokens, channels) * 0.01)
        if weight_mask:
            self.prob = nn.Sequential(
                nn.Conv2d(channels, channels, 3, padding=1),
                nn.AdaptiveAvgPool2d(1),
                nn.Conv2d(channels, num_tokens, 1),
            )
            for m in self.prob.modules():
                if isinstance(m, nn.Conv2d):   # He init, fan-out: std = sqrt(2 / (k_h k_w C_out)), bias 0
                    fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                    nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
                    nn.init.zeros_(m.bias)

    def forward_mask(self, x):
        """M = sigmoid(E . F): [N, C, H, W] -> [N, T, H, W]."""
        return torch.einsum('tc,nchw->nthw', self.mask_token, x).sigmoid()

    def forward_prob(self, x):
        """Token weights p = softmax over tokens of P(F): [N, C, H, W] -> [N, T, 1, 1, 1]."""
        if not self.weight_mask:
            raise RuntimeError('this MaskModule was built with weight_mask=False (no token-weight head)')
        logits = self.prob(x).flatten(1)                               # [N, T]
        return logits.softmax(dim=1)[:, :, None, None, None]

    def forward_train(self, x):
        """Stage 1: the masked feature ``sum_t p_t M_t F`` (plain sum without weights) and the Dice term."""
        mask = self.forward_mask(x)                                    # [N, T, H, W]
        dice = dice_coeff(mask.flatten(2))
        masked = mask.unsqueeze(2) * x.unsqueeze(1)                    # [N, T, C, H, W]
        if self.weight_mask:
            masked = masked * self.forward_prob(x)
        return masked.sum(1), dice

    forward = forward_train


def as_level_list(y):
    """A single tensor, a list/tuple, or an (ordered) dict of levels -> list of tensors (dict order)."""
    if torch.is_tensor(y):
        return [y]
    if isinstance(y, dict):
        return list(y.values())
    if isinstance(y, (list, tuple)):
        return list(y)
    raise TypeError(f'expected a tensor, a list/tuple or a dict of feature levels, got {type(y).__name__}')


def extract_mask_state(obj):
    """The token state dict from a raw state dict or a training checkpoint (``{'state_dict': ...}``,
    ``{'model': ...}``, ``{'mask_modules': ...}``). Every key containing ``mask_modules`` keeps the part from
    ``mask_modules`` on; a bare segmentation token file (``{'mask_token': ...}``) is returned as is."""
    if not isinstance(obj, dict):
        raise ValueError(f'a token checkpoint must be a dict, got {type(obj).__name__}')
    for key in ('state_dict', 'model', 'tokens'):
        if key in obj and isinstance(obj[key], dict):
            inner = extract_mask_state(obj[key])
            if inner:
                return inner
    out = OrderedDict()
    for k, v in obj.items():
        if torch.is_tensor(v) and 'mask_modules' in k:
            out[k[k.index('mask_modules'):]] = v
    if not out and 'mask_token' in obj and torch.is_tensor(obj['mask_token']):
        out = OrderedDict((k, v) for k, v in obj.items() if torch.is_tensor(v))
    return out


def read_token_state(path_or_state_dict):
    """The token state dict of a token file (path) or an already loaded dict; ``ValueError`` if it holds none."""
    obj = path_or_state_dict
    if isinstance(obj, str):
        obj = torch.load(obj, map_location='cpu', weights_only=False)
    sd = extract_mask_state(obj)
    if not sd:
        raise ValueError('no mask_modules.* / mask_token entries found in the token checkpoint')
    return sd


class _TokenLoss(nn.Module):
    """Shared: the frozen token modules, ``load_tokens`` and the plain-int iteration counter."""

    def _init_tokens(self, pretrained):
        self._iter = 0
        if pretrained:
            self.load_tokens(pretrained)

    def set_iter(self, it):
        """Restore the iteration counter (e.g. from the trainer's global step on resume)."""
        self._iter = int(it)

    def load_tokens(self, path_or_state_dict):
        """Load learned tokens (strict) from a path or a dict; prefixes before ``mask_modules`` are stripped."""
        self.token_state_target().load_state_dict(read_token_state(path_or_state_dict), strict=True)

    def token_state_target(self):
        return self


class MasKDLoss(_TokenLoss):
    """Stage 2 for detection: masked feature reconstruction on every level (tokens frozen).

    Per level l, with M = sigmoid(E F_t) (times the detached student mask sigmoid(E F_s) once ``_iter`` has
    reached ``custom_mask_warmup``)::

        l[n, t] = 1/C sum_c sum_hw M^2 (F_s - F_t)^2 / sum_hw M
        L_l     = 1/N sum_n sum_t p[n, t] l[n, t]       (weight_mask)   or   mean_{n,t} l[n, t]
        L       = loss_weight * sum_l L_l

    ``y_s_list`` must already be aligned to the teacher's channels (see ``align.AlignModules``).
    """

    def __init__(self, channels, num_tokens=6, weight_mask=True, custom_mask=True, custom_mask_warmup=1000,
                 pretrained=None, loss_weight=1.0):
        super().__init__()
        channels = [channels] if isinstance(channels, int) else list(channels)
        self.channels = channels
        self.weight_mask, self.custom_mask = bool(weight_mask), bool(custom_mask)
        self.custom_mask_warmup, self.loss_weight = int(custom_mask_warmup), float(loss_weight)
        self.mask_modules = nn.ModuleList(MaskModule(c, num_tokens, weight_mask) for c in channels)
        for p in self.mask_modules.parameters():
            p.requires_grad_(False)
        self._init_tokens(pretrained)
        self.last_level_losses = []

    def train(self, mode=True):   # the token modules hold no BN/dropout, but keep them frozen regardless
        super().train(mode)
        for p in self.mask_modules.parameters():
            p.requires_grad_(False)
        return self

    def level_loss(self, module, y_s, y_t, custom):
        mask = module.forward_mask(y_t)                                # [N, T, H, W]
        if custom:
            mask = mask * module.forward_mask(y_s).detach()
        diff = (y_s - y_t).pow(2)                                      # [N, C, H, W]
        num = torch.einsum('nthw,nchw->ntc', mask.pow(2), diff)       # sum_hw M^2 (F_s - F_t)^2
        # no epsilon (official); the clamp only turns 0/0 (a mask that underflowed to exactly 0) into 0
        den = mask.sum((2, 3)).clamp_min(torch.finfo(mask.dtype).tiny)
        loss = (num / den.unsqueeze(-1)).mean(-1)                      # [N, T]
        if self.weight_mask:
            p = module.forward_prob(y_t).flatten(1)                    # [N, T]
            return (p * loss).sum(1).mean()
        return loss.mean()

    def forward(self, y_s_list, y_t_list):
        ys, yt = as_level_list(y_s_list), as_level_list(y_t_list)
        if len(ys) != len(yt) or len(ys) != len(self.mask_modules):
            raise ValueError(f'MasKDLoss has {len(self.mask_modules)} levels, got {len(ys)} student and '
                             f'{len(yt)} teacher features')
        custom = self.custom_mask and self._iter >= self.custom_mask_warmup
        levels = []
        for module, s, t in zip(self.mask_modules, ys, yt):
            if s.shape != t.shape:
                raise ValueError(f'student feature {tuple(s.shape)} and teacher feature {tuple(t.shape)} differ '
                                 f'(align the student first)')
            levels.append(self.level_loss(module, s, t.detach(), custom))
        self._iter += 1
        self.last_level_losses = [self.loss_weight * v.detach() for v in levels]
        return self.loss_weight * torch.stack(levels).sum()


class SegMasKDLoss(_TokenLoss):
    """Stage 2 for segmentation (official ``segmentation/losses/maskd.py``) on the 1/8-resolution logits::

        L = 0.5 * mean_{n,t,c} [ sum_hw M^2 (S - T)^2 / (sum_hw M + 1e-5) ],   M = sigmoid(E T)

    No token weights, no student customisation. The token file is a bare ``mask_token`` [T, C].
    """

    def __init__(self, channels=19, num_tokens=8, pretrained=None):
        super().__init__()
        self.mask_modules = nn.ModuleList([MaskModule(channels, num_tokens, weight_mask=False)])
        for p in self.mask_modules.parameters():
            p.requires_grad_(False)
        self._init_tokens(pretrained)

    @property
    def mask_module(self):
        return self.mask_modules[0]

    def load_tokens(self, path_or_state_dict):
        sd = read_token_state(path_or_state_dict)
        sd = OrderedDict((k.split('mask_modules.0.', 1)[-1], v) for k, v in sd.items())
        self.mask_module.load_state_dict(sd, strict=True)

    def forward(self, y_s, y_t):
        if y_s.shape != y_t.shape:
            raise ValueError(f'student logits {tuple(y_s.shape)} and teacher logits {tuple(y_t.shape)} differ')
        y_t = y_t.detach()
        mask = self.mask_module.forward_mask(y_t)                      # [N, T, H, W]
        num = torch.einsum('nthw,nchw->ntc', mask.pow(2), (y_s - y_t).pow(2))
        loss = num / (mask.sum((2, 3)).unsqueeze(-1) + 1e-5)
        self._iter += 1
        return 0.5 * loss.mean()


class HeadDistillLoss(nn.Module):
    """The extra head-distillation terms of the official detection configs: ``kind`` 'l1' or 'smooth_l1'
    (``beta``) between student and teacher head outputs, mean over all elements, summed over the given levels,
    times ``loss_weight``."""

    def __init__(self, kind='smooth_l1', beta=1.0, loss_weight=1.0):
        super().__init__()
        if kind not in ('l1', 'smooth_l1'):
            raise ValueError(f"head-distillation loss kind must be 'l1' or 'smooth_l1', got {kind!r}")
        self.kind, self.beta, self.loss_weight = kind, float(beta), float(loss_weight)

    def forward(self, y_s, y_t):
        total = 0.0
        for s, t in zip(as_level_list(y_s), as_level_list(y_t)):
            t = t.detach()
            total = total + (F.l1_loss(s, t) if self.kind == 'l1' else F.smooth_l1_loss(s, t, beta=self.beta))
        return self.loss_weight * total
