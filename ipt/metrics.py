"""PSNR of the official release (``utility.calc_psnr``) and output quantisation."""
import math

import torch

Y_COEFFS = (65.738, 129.057, 25.064)  # ITU-R BT.601 luma of [0, 1] RGB, divided by 256 below


def quantize(img, rgb_range=255):
    """Clamp to ``[0, rgb_range]`` and round to the 8-bit grid."""
    pixel_range = 255 / rgb_range
    return img.mul(pixel_range).clamp(0, 255).round().div(pixel_range)


def calc_psnr(sr, hr, scale, rgb_range=255, cal_type='y'):
    """PSNR (dB) of ``sr`` against ``hr`` (``[B, 3, H, W]``, same size, on the ``[0, rgb_range]`` scale).

    ``cal_type='y'``: on the luma ``d_Y = (65.738 d_R + 129.057 d_G + 25.064 d_B) / 256`` of ``d = (sr - hr) /
    rgb_range``; anything else: on the RGB difference. ``scale`` pixels are shaved from every border when
    ``scale > 1`` (SR); nothing for ``scale == 1``. Returns the PSNR of the mean squared error over the batch."""
    if sr.shape != hr.shape:
        raise ValueError(f'sr {tuple(sr.shape)} and hr {tuple(hr.shape)} differ in shape')
    if hr.nelement() == 1:
        return 0.0
    diff = (sr.double() - hr.double()) / rgb_range
    if cal_type == 'y' and diff.size(1) > 1:
        w = diff.new_tensor(Y_COEFFS).view(1, 3, 1, 1) / 256
        diff = diff.mul(w).sum(dim=1, keepdim=True)
    if scale > 1:
        diff = diff[..., scale:-scale, scale:-scale]
    mse = diff.pow(2).mean().item()
    return float('inf') if mse == 0 else -10 * math.log10(mse)


def rgb_to_y(img, rgb_range=255):
    """Luma (offset 16) of a ``[B, 3, H, W]`` image on the ``[0, rgb_range]`` scale, in [0, rgb_range] units."""
    w = img.new_tensor(Y_COEFFS).view(1, 3, 1, 1) / 256
    return img.mul(w).sum(1, keepdim=True) + 16 * rgb_range / 255


def calc_ssim(sr, hr, rgb_range=255):
    """SSIM on the Y channel (11x11 Gaussian window, sigma 1.5, K = (0.01, 0.03)), as the paper reports for
    deraining (not part of the official code)."""
    x, y = rgb_to_y(sr.double(), rgb_range) * 255 / rgb_range, rgb_to_y(hr.double(), rgb_range) * 255 / rgb_range
    g = torch.exp(-(torch.arange(11, dtype=torch.float64) - 5) ** 2 / (2 * 1.5 ** 2))
    g = (g / g.sum()).to(x.device)
    win = (g[:, None] * g[None, :]).view(1, 1, 11, 11)
    f = lambda t: torch.nn.functional.conv2d(t, win)  # noqa: E731 ('valid' window as in MATLAB ssim_index)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mx, my = f(x), f(y)
    sxx, syy, sxy = f(x * x) - mx ** 2, f(y * y) - my ** 2, f(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (sxx + syy + c2))
    return s.mean().item()
