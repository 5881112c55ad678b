"""TaylorSENet (Li et al., IJCAI 2022): a Taylor-unfolding network for monaural speech enhancement.

The enhanced compressed spectrum is a truncated Taylor series around the noisy spectrum:

    S_hat = T0 + sum_{q=1..Q} U_q / q!,   U_0 = T0,   U_q = D_q(h, U_{q-1}) + (q - 1) U_{q-1}

T0 is the 0th-order term (a magnitude gain applied to |X| with the noisy phase), D_q the trainable
"derivative operator" of order q (a HighOrderBlock), h the features of a separate U^2 encoder.
Module, argument and state_dict names follow the official release so its checkpoints load strictly.
Imports only torch.
"""
import math

import torch
import torch.nn as nn
from torch import Tensor


# ----------------------------------------------------------------------------------------- normalisation
class CumulativeLayerNorm2d(nn.Module):
    """Causal layer norm on (B, C, T, F): frame t is normalised with the mean/variance of all C x F entries of
    frames 0..t (cumulative sums over time), then an affine per-channel gain and bias."""

    def __init__(self, num_features, affine=True, eps=1e-5):
        super().__init__()
        self.num_features, self.eps = num_features, eps
        if affine:
            self.gain = nn.Parameter(torch.ones(1, num_features, 1, 1))
            self.bias = nn.Parameter(torch.zeros(1, num_features, 1, 1))
        else:
            self.register_buffer('gain', torch.ones(1, num_features, 1, 1), persistent=False)
            self.register_buffer('bias', torch.zeros(1, num_features, 1, 1), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        b, c, t, f = x.shape
        step_sum = x.sum(dim=(1, 3), keepdim=True)                  # (B,1,T,1)
        step_pow = x.pow(2).sum(dim=(1, 3), keepdim=True)
        count = torch.arange(1, t + 1, device=x.device, dtype=x.dtype).view(1, 1, t, 1) * (c * f)
        mean = step_sum.cumsum(dim=2) / count
        var = step_pow.cumsum(dim=2) / count - mean.pow(2)
        return (x - mean) / (var.clamp_min(0) + self.eps).sqrt() * self.gain + self.bias


class CumulativeLayerNorm1d(nn.Module):
    """Causal layer norm on (B, C, T): statistics over channels accumulated over frames 0..t."""

    def __init__(self, num_features, affine=True, eps=1e-5):
        super().__init__()
        self.num_features, self.eps = num_features, eps
        if affine:
            self.gain = nn.Parameter(torch.ones(1, num_features, 1))
            self.bias = nn.Parameter(torch.zeros(1, num_features, 1))
        else:
            self.register_buffer('gain', torch.ones(1, num_features, 1), persistent=False)
            self.register_buffer('bias', torch.zeros(1, num_features, 1), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        b, c, t = x.shape
        count = torch.arange(1, t + 1, device=x.device, dtype=x.dtype).view(1, 1, t) * c
        mean = x.sum(dim=1, keepdim=True).cumsum(dim=2) / count
        var = x.pow(2).sum(dim=1, keepdim=True).cumsum(dim=2) / count - mean.pow(2)
        return (x - mean) / (var.clamp_min(0) + self.eps).sqrt() * self.gain + self.bias


class InstantLayerNorm2d(nn.Module):
    """Per-frame layer norm on (B, C, T, F): statistics over C x F of each frame."""

    def __init__(self, num_features, affine=True, eps=1e-5):
        super().__init__()
        self.eps = eps
        shape = (1, num_features, 1, 1)
        self.gain = nn.Parameter(torch.ones(shape)) if affine else None
        self.bias = nn.Parameter(torch.zeros(shape)) if affine else None

    def forward(self, x: Tensor) -> Tensor:
        mean = x.mean(dim=(1, 3), keepdim=True)
        var = x.var(dim=(1, 3), keepdim=True, unbiased=False)
        x = (x - mean) / (var + self.eps).sqrt()
        return x * self.gain + self.bias if self.gain is not None else x


class InstantLayerNorm1d(nn.Module):
    """Per-frame layer norm on (B, C, T): statistics over C of each frame."""

    def __init__(self, num_features, affine=True, eps=1e-5):
        super().__init__()
        self.eps = eps
        shape = (1, num_features, 1)
        self.gain = nn.Parameter(torch.ones(shape)) if affine else None
        self.bias = nn.Parameter(torch.zeros(shape)) if affine else None

    def forward(self, x: Tensor) -> Tensor:
        mean = x.mean(dim=1, keepdim=True)
        var = x.var(dim=1, keepdim=True, unbiased=False)
        x = (x - mean) / (var + self.eps).sqrt()
        return x * self.gain + self.bias if self.gain is not None else x


NORM_TYPES = ('IN', 'BN', 'cLN', 'iLN')


class NormSwitch(nn.Module):
    """Normalisation by name. ``"IN"`` reproduces the official model: InstanceNorm with eps = ``in_eps`` (1.0,
    the official code passed ``True`` into the eps slot) and no affine parameters (``in_affine=False``)."""

    def __init__(self, norm_type, format, num_features, affine=True, in_eps=1.0, in_affine=False):
        super().__init__()
        if norm_type not in NORM_TYPES:
            raise ValueError(f'norm_type must be one of {NORM_TYPES}, got {norm_type!r}')
        if format not in ('1D', '2D'):
            raise ValueError(f'format must be "1D" or "2D", got {format!r}')
        self.norm_type, self.format = norm_type, format
        two = format == '2D'
        if norm_type == 'IN':
            cls = nn.InstanceNorm2d if two else nn.InstanceNorm1d
            self.norm = cls(num_features, eps=float(in_eps), affine=in_affine)
        elif norm_type == 'BN':
            self.norm = (nn.BatchNorm2d if two else nn.BatchNorm1d)(num_features, affine=affine)
        elif norm_type == 'cLN':
            self.norm = (CumulativeLayerNorm2d if two else CumulativeLayerNorm1d)(num_features, affine)
        else:
            self.norm = (InstantLayerNorm2d if two else InstantLayerNorm1d)(num_features, affine)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x)


def _norm(norm_type, fmt, c, nk):
    return NormSwitch(norm_type, fmt, c, **(nk or {}))


# ----------------------------------------------------------------------------------------- 2-D blocks
class Chomp_T(nn.Module):
    """Drops the last ``t`` frames (undoes the time growth of a causal transposed conv)."""

    def __init__(self, t):
        super().__init__()
        self.t = t

    def forward(self, x: Tensor) -> Tensor:
        return x[:, :, :-self.t, :]


class GateConv2d(nn.Module):
    """Gated conv: Conv2d(cin -> 2 cout), first half value, second half gate, ``v * sigmoid(g)``.
    With a time kernel > 1 the input is zero-padded at the start of time (causal); frequency is "valid"."""

    def __init__(self, in_channels, out_channels, kernel_size, stride, padding=None):
        super().__init__()
        kernel_size = tuple(kernel_size)
        k_t = kernel_size[0]
        padding = padding if padding is not None else (0, 0, k_t - 1, 0)
        conv = nn.Conv2d(in_channels, out_channels * 2, kernel_size, stride)
        self.conv = nn.Sequential(nn.ConstantPad2d(padding, 0.), conv) if k_t > 1 else conv

    def forward(self, inputs: Tensor) -> Tensor:
        if inputs.dim() == 3:
            inputs = inputs.unsqueeze(1)
        value, gate = self.conv(inputs).chunk(2, dim=1)
        return value * gate.sigmoid()


class GateConvTranspose2d(nn.Module):
    """Gated transposed conv; with a time kernel > 1 the last ``k_t - 1`` frames are dropped (causal)."""

    def __init__(self, in_channels, out_channels, kernel_size, stride):
        super().__init__()
        kernel_size = tuple(kernel_size)
        k_t = kernel_size[0]
        conv = nn.ConvTranspose2d(in_channels, out_channels * 2, kernel_size, stride)
        self.conv = nn.Sequential(conv, Chomp_T(k_t - 1)) if k_t > 1 else conv

    def forward(self, inputs: Tensor) -> Tensor:
        value, gate = self.conv(inputs).chunk(2, dim=1)
        return value * gate.sigmoid()


class Conv2dunit(nn.Module):
    """[causal time pad] -> Conv2d(C, C, k, stride (1,2)) -> Norm -> PReLU; F -> (F - k_f) // 2 + 1."""

    def __init__(self, k, c, norm_type, norm_kw=None):
        super().__init__()
        k = tuple(k)
        layers = [nn.Conv2d(c, c, k, (1, 2)), _norm(norm_type, '2D', c, norm_kw), nn.PReLU(c)]
        if k[0] > 1:
            layers.insert(0, nn.ConstantPad2d((0, 0, k[0] - 1, 0), 0.))
        self.conv = nn.Sequential(*layers)

    def forward(self, inputs: Tensor) -> Tensor:
        return self.conv(inputs)


class Deconv2dunit(nn.Module):
    """ConvTranspose2d(C or 2C -> C, k, stride (1,2)) -> [drop last frames] -> Norm -> PReLU."""

    def __init__(self, k, c, intra_connect, norm_type, norm_kw=None):
        super().__init__()
        k = tuple(k)
        cin = 2 * c if intra_connect == 'cat' else c
        layers = [nn.ConvTranspose2d(cin, c, k, (1, 2))]
        if k[0] > 1:
            layers.append(Chomp_T(k[0] - 1))
        layers += [_norm(norm_type, '2D', c, norm_kw), nn.PReLU(c)]
        self.deconv = nn.Sequential(*layers)

    def forward(self, inputs: Tensor) -> Tensor:
        return self.deconv(inputs)


class Skip_connect(nn.Module):
    def __init__(self, connect):
        super().__init__()
        if connect not in ('add', 'cat'):
            raise ValueError(f'connect must be "add" or "cat", got {connect!r}')
        self.connect = connect

    def forward(self, x_main: Tensor, x_aux: Tensor) -> Tensor:
        return x_main + x_aux if self.connect == 'add' else torch.cat((x_main, x_aux), dim=1)


class En_unet_module(nn.Module):
    """Recalibration encoding (REL, ``de_flag=False``) / decoding (RDL, ``de_flag=True``) layer: a gated
    (transposed) conv, then an inner U-Net of depth ``scale`` whose output is added back (residual)."""

    def __init__(self, cin, cout, k1, k2, intra_connect, norm_type, scale, de_flag=False, norm_kw=None):
        super().__init__()
        first = GateConvTranspose2d(cin, cout, k1, (1, 2)) if de_flag else GateConv2d(cin, cout, k1, (1, 2))
        self.in_conv = nn.Sequential(first, _norm(norm_type, '2D', cout, norm_kw), nn.PReLU(cout))
        self.enco = nn.ModuleList([Conv2dunit(k2, cout, norm_type, norm_kw) for _ in range(scale)])
        self.deco = nn.ModuleList([Deconv2dunit(k2, cout, 'add' if i == 0 else intra_connect, norm_type, norm_kw)
                                   for i in range(scale)])
        self.skip_connect = Skip_connect(intra_connect)

    def forward(self, inputs: Tensor) -> Tensor:
        x_resi = self.in_conv(inputs)
        x, skips = x_resi, []
        for enc in self.enco:
            x = enc(x)
            skips.append(x)
        for i, dec in enumerate(self.deco):
            x = dec(x if i == 0 else self.skip_connect(x, skips[-(i + 1)]))
        return x_resi + x


class U2Net_Encoder(nn.Module):
    """Four RELs (inner depths 4, 3, 2, 1) and a gated conv: 161 -> 79 -> 39 -> 19 -> 9 -> 4 bins, 64 channels."""

    def __init__(self, cin, k1, k2, c, intra_connect, norm_type, norm_kw=None):
        super().__init__()
        self.meta_unet_list = nn.ModuleList([
            En_unet_module(cin, c, (1, 5), k2, intra_connect, norm_type, 4, False, norm_kw),
            En_unet_module(c, c, k1, k2, intra_connect, norm_type, 3, False, norm_kw),
            En_unet_module(c, c, k1, k2, intra_connect, norm_type, 2, False, norm_kw),
            En_unet_module(c, c, k1, k2, intra_connect, norm_type, 1, False, norm_kw)])
        self.last_conv = nn.Sequential(GateConv2d(c, 64, k1, (1, 2)), _norm(norm_type, '2D', 64, norm_kw),
                                       nn.PReLU(64))

    def forward(self, x: Tensor):
        en_list = []
        for m in self.meta_unet_list:
            x = m(x)
            en_list.append(x)
        x = self.last_conv(x)
        en_list.append(x)
        return x, en_list


class U2Net_Decoder(nn.Module):
    """Four RDLs (inner depths 1, 2, 3, 4) fed with ``inter_connect`` skips, then a gated transposed conv to 161
    bins, a 1x1 conv and a sigmoid: the 0th-order gain (B, T, F)."""

    def __init__(self, c, k1, k2, intra_connect, inter_connect, norm_type, norm_kw=None):
        super().__init__()
        if inter_connect not in ('add', 'cat'):
            raise ValueError(f'inter_connect must be "add" or "cat", got {inter_connect!r}')
        self.inter_connect = inter_connect
        f = 2 if inter_connect == 'cat' else 1
        self.meta_unet_list = nn.ModuleList([
            En_unet_module(64 * f, c, k1, k2, intra_connect, norm_type, 1, True, norm_kw),
            En_unet_module(c * f, c, k1, k2, intra_connect, norm_type, 2, True, norm_kw),
            En_unet_module(c * f, c, k1, k2, intra_connect, norm_type, 3, True, norm_kw),
            En_unet_module(c * f, c, k1, k2, intra_connect, norm_type, 4, True, norm_kw)])
        self.last_conv = nn.Sequential(GateConvTranspose2d(c * f, 16, (1, 5), (1, 2)),
                                       _norm(norm_type, '2D', 16, norm_kw), nn.PReLU(16),
                                       nn.Conv2d(16, 1, (1, 1), (1, 1)), nn.Sigmoid())

    def _join(self, x, skip):
        return torch.cat((x, skip), dim=1) if self.inter_connect == 'cat' else x + skip

    def forward(self, x: Tensor, en_list) -> Tensor:
        for i, m in enumerate(self.meta_unet_list):
            x = m(self._join(x, en_list[-(i + 1)]))
        return self.last_conv(self._join(x, en_list[0])).squeeze(1)


class UNet_Encoder(nn.Module):
    """Plain gated U-Net encoder (``is_u2=False`` ablation): 5 gated convs, kernels (1,5) then k1."""

    def __init__(self, cin, k1, c, norm_type, norm_kw=None):
        super().__init__()
        kernels = [(1, 5)] + [tuple(k1)] * 4
        chans = [cin] + [c] * 4
        self.unet_list = nn.ModuleList([
            nn.Sequential(GateConv2d(ci, co, k, (1, 2)), _norm(norm_type, '2D', co, norm_kw), nn.PReLU(co))
            for ci, co, k in zip(chans, [c] * 4 + [64], kernels)])

    def forward(self, x: Tensor):
        en_list = []
        for m in self.unet_list:
            x = m(x)
            en_list.append(x)
        return x, en_list


class UNet_Decoder(nn.Module):
    """Plain gated U-Net decoder (``is_u2=False`` ablation) producing the sigmoid gain (B, T, F)."""

    def __init__(self, c, k1, inter_connect, norm_type, norm_kw=None):
        super().__init__()
        if inter_connect not in ('add', 'cat'):
            raise ValueError(f'inter_connect must be "add" or "cat", got {inter_connect!r}')
        self.inter_connect = inter_connect
        f = 2 if inter_connect == 'cat' else 1
        layers = [nn.Sequential(GateConvTranspose2d((64 if i == 0 else c) * f, c, k1, (1, 2)),
                                _norm(norm_type, '2D', c, norm_kw), nn.PReLU(c)) for i in range(4)]
        layers.append(nn.Sequential(GateConvTranspose2d(c * f, 16, (1, 5), (1, 2)),
                                    _norm(norm_type, '2D', 16, norm_kw), nn.PReLU(16),
                                    nn.Conv2d(16, 1, (1, 1), (1, 1)), nn.Sigmoid()))
        self.unet_list = nn.ModuleList(layers)

    def forward(self, x: Tensor, en_list) -> Tensor:
        for i, m in enumerate(self.unet_list):
            skip = en_list[-(i + 1)]
            x = m(torch.cat((x, skip), dim=1) if self.inter_connect == 'cat' else x + skip)
        return x.squeeze(1)


# ----------------------------------------------------------------------------------------- temporal blocks
class SqueezedTCM(nn.Module):
    """Squeezed temporal convolution module on (B, d_feat, T): 1x1 squeeze to cd1, two dilated branches
    (PReLU -> Norm -> pad -> conv, the right one gated by a sigmoid), their product, PReLU -> Norm -> 1x1
    expansion, residual."""

    def __init__(self, kd1, cd1, dilation, d_feat, is_causal, norm_type, norm_kw=None):
        super().__init__()
        self.in_conv = nn.Conv1d(d_feat, cd1, kernel_size=1, bias=False)
        span = (kd1 - 1) * dilation
        pad = (span, 0) if is_causal else (span // 2, span // 2)

        def branch(gate):
            layers = [nn.PReLU(cd1), _norm(norm_type, '1D', cd1, norm_kw), nn.ConstantPad1d(pad, 0.),
                      nn.Conv1d(cd1, cd1, kernel_size=kd1, dilation=dilation, bias=False)]
            return nn.Sequential(*(layers + [nn.Sigmoid()] if gate else layers))

        self.left_conv, self.right_conv = branch(False), branch(True)
        self.out_conv = nn.Sequential(nn.PReLU(cd1), _norm(norm_type, '1D', cd1, norm_kw),
                                      nn.Conv1d(cd1, d_feat, kernel_size=1, bias=False))

    def forward(self, inputs: Tensor) -> Tensor:
        x = self.in_conv(inputs)
        return inputs + self.out_conv(self.left_conv(x) * self.right_conv(x))


class TCMList(nn.Module):
    """S-TCNs with the given dilations in sequence."""

    def __init__(self, kd1, cd1, d_feat, dilations, is_causal, norm_type, norm_kw=None):
        super().__init__()
        self.tcm_list = nn.ModuleList([SqueezedTCM(kd1, cd1, r, d_feat, is_causal, norm_type, norm_kw)
                                       for r in dilations])

    def forward(self, x: Tensor) -> Tensor:
        for m in self.tcm_list:
            x = m(x)
        return x


def flatten_feature(x: Tensor) -> Tensor:
    """(B, C, T, F') -> (B, C*F', T), feature index = c * F' + f (channel-major)."""
    b, c, t, f = x.shape
    return x.transpose(-2, -1).reshape(b, c * f, t)


# ----------------------------------------------------------------------------------------- branches
class ZeroOrderBlock(nn.Module):
    """0th-order magnitude filter: U^2 encoder on |X| -> p TCMLists -> U^2 decoder -> sigmoid gain."""

    def __init__(self, cin, k1, k2, c, kd1, cd1, d_feat, dilations, p, intra_connect, inter_connect, norm_type,
                 is_causal, is_u2, norm_kw=None):
        super().__init__()
        self.c, self.p = c, p
        if is_u2:
            self.en = U2Net_Encoder(cin, k1, k2, c, intra_connect, norm_type, norm_kw)
            self.de = U2Net_Decoder(c, k1, k2, intra_connect, inter_connect, norm_type, norm_kw)
        else:
            self.en = UNet_Encoder(cin, k1, c, norm_type, norm_kw)
            self.de = UNet_Decoder(c, k1, inter_connect, norm_type, norm_kw)
        self.tcms = nn.ModuleList([TCMList(kd1, cd1, d_feat, dilations, is_causal, norm_type, norm_kw)
                                   for _ in range(p)])

    def forward(self, inputs: Tensor):
        if inputs.dim() == 3:
            inputs = inputs.unsqueeze(1)
        en_x, en_list = self.en(inputs)
        b, c, t, f = en_x.shape
        feature_head = flatten_feature(en_x)
        x = feature_head
        for tcm in self.tcms:
            x = tcm(x)
        x = x.view(b, c, f, t).transpose(-2, -1)
        return self.de(x, en_list), feature_head


class HighOrderBlock(nn.Module):
    """Trainable derivative operator D_q: fuses h (B, d_feat, T) with the previous term (B, 2, T, F) flattened
    real-bins-then-imag-bins, p TCMLists, two 1x1 heads for the real and imaginary residual (no activation)."""

    def __init__(self, kd1, cd1, d_feat, dilations, p, fft_num, is_causal, norm_type, norm_kw=None):
        super().__init__()
        self.p = p
        n_bins = fft_num // 2 + 1
        self.in_conv = nn.Conv1d(2 * n_bins + d_feat, d_feat, 1)
        self.tcms = nn.ModuleList([TCMList(kd1, cd1, d_feat, dilations, is_causal, norm_type, norm_kw)
                                   for _ in range(p)])
        self.real_resi = nn.Conv1d(d_feat, n_bins, 1)
        self.imag_resi = nn.Conv1d(d_feat, n_bins, 1)

    def forward(self, en_x: Tensor, pre_x: Tensor) -> Tensor:
        x = self.in_conv(torch.cat((en_x, flatten_feature(pre_x)), dim=1))
        for tcm in self.tcms:
            x = tcm(x)
        return torch.stack((self.real_resi(x).transpose(-2, -1), self.imag_resi(x).transpose(-2, -1)), dim=1)


def taylor_superposition(zero_term: Tensor, operators, order_num: int):
    """Eq. (14)/(15): U_0 = T0, U_q = D_q(U_{q-1}) + (q-1) U_{q-1}, S = T0 + sum_q U_q / q!.

    ``operators[q-1]`` is a callable mapping the previous term to D_q's output. Returns (S, [U_1..U_Q]).
    """
    out, pre, terms = zero_term, zero_term, []
    for q in range(1, order_num + 1):
        pre = operators[q - 1](pre) + (q - 1) * pre
        terms.append(pre)
        out = out + pre / math.factorial(q)
    return out, terms


class TaylorSENet(nn.Module):
    """TaylorSENet on the compressed spectrum ``(B, 2, T, F)`` (time before frequency, F = fft_num/2 + 1)."""

    def __init__(self, cin=2, k1=(1, 3), k2=(2, 3), c=64, kd1=5, cd1=64, d_feat=256, dilations=(1, 2, 5, 9), p=2,
                 fft_num=320, order_num=3, intra_connect='cat', inter_connect='cat', norm_type='IN',
                 is_causal=True, is_u2=True, is_param_share=False, is_encoder_share=False, in_eps=1.0,
                 in_affine=False):
        super().__init__()
        if order_num < 0:
            raise ValueError(f'order_num must be >= 0, got {order_num}')
        for name, v in (('intra_connect', intra_connect), ('inter_connect', inter_connect)):
            if v not in ('add', 'cat'):
                raise ValueError(f'{name} must be "add" or "cat", got {v!r}')
        if norm_type not in NORM_TYPES:
            raise ValueError(f'norm_type must be one of {NORM_TYPES}, got {norm_type!r}')
        k1, k2, dilations = tuple(k1), tuple(k2), tuple(dilations)
        nk = {'in_eps': in_eps, 'in_affine': in_affine}
        self.order_num, self.is_param_share, self.is_encoder_share = order_num, is_param_share, is_encoder_share
        self.fft_num = fft_num
        self.zeroorderblock = ZeroOrderBlock(cin // 2, k1, k2, c, kd1, cd1, d_feat, dilations, p, intra_connect,
                                             inter_connect, norm_type, is_causal, is_u2, nk)
        if not is_encoder_share:
            self.separate_en = (U2Net_Encoder(cin, k1, k2, c, intra_connect, norm_type, nk) if is_u2
                                else UNet_Encoder(cin, k1, c, norm_type, nk))
        n_ops = min(1, order_num) if is_param_share else order_num
        self.highorderblock_list = nn.ModuleList([
            HighOrderBlock(kd1, cd1, d_feat, dilations, p, fft_num, is_causal, norm_type, nk) for _ in range(n_ops)])

    def forward(self, inputs: Tensor, return_terms: bool = False):
        if inputs.dim() != 4 or inputs.shape[1] != 2 or inputs.shape[-1] != self.fft_num // 2 + 1:
            raise ValueError(f'expected input (B, 2, T, {self.fft_num // 2 + 1}), got {tuple(inputs.shape)}')
        mag = torch.norm(inputs, dim=1)
        phase = torch.atan2(inputs[:, 1], inputs[:, 0])
        gain, feature_head = self.zeroorderblock(mag)
        zero_mag = gain * mag
        zero_term = torch.stack((zero_mag * torch.cos(phase), zero_mag * torch.sin(phase)), dim=1)
        if not self.is_encoder_share:
            feature_head = flatten_feature(self.separate_en(inputs)[0])
        blocks = self.highorderblock_list
        ops = [(lambda u, m=blocks[0 if self.is_param_share else q]: m(feature_head, u))
               for q in range(self.order_num)]
        out, terms = taylor_superposition(zero_term, ops, self.order_num)
        if return_terms:
            return out, {'gain': gain, 'zero_term': zero_term, 'terms': terms}
        return out


def num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
