"""Test-time tiling of the official IPT release (``Model.forward_chop``) and the x8 self-ensemble.

The body only takes ``patch_size x patch_size`` inputs, so a whole image is cut into windows of ``P = 48`` LR
pixels on a grid of stride ``S = P / 4 = 12``; every window output is cropped by ``m = 12 * scale`` pixels on
each side and the overlapping crops are averaged. The outer band (top/left strips, bottom/right strips and
the bottom-right corner window) is filled by strip passes so the result is exactly ``h*s x w*s``.
"""
import torch
import torch.nn.functional as F


def _run(model_fn, windows, crop_batch_size):
    """``windows [K, C, P, P]`` through ``model_fn`` in batches of ``crop_batch_size``."""
    return torch.cat([model_fn(windows[i:i + crop_batch_size]) for i in range(0, windows.size(0), crop_batch_size)])


def _windows(x, p, stride):
    """All ``p x p`` windows of ``x [1, C, h, w]`` with top-left corners on a ``stride`` grid (raster order)."""
    c = x.size(1)
    cols = F.unfold(x, p, stride=stride)  # [1, C*p*p, K]
    return cols.transpose(0, 2).reshape(-1, c, p, p)


def _overlap_add(y, size, kernel, stride):
    """Fold window outputs ``y [K, C, kh, kw]`` back onto a ``size`` canvas (sum over overlaps)."""
    cols = y.reshape(y.size(0), -1, 1).transpose(0, 2)
    return F.fold(cols, size, kernel, stride=stride)


def _average(y, size, kernel, stride):
    """Overlap-average of window outputs ``y [K, C, kh, kw]`` on a ``size`` canvas."""
    total = _overlap_add(y, size, kernel, stride)
    ones = torch.ones(1, y.size(1), *size, dtype=y.dtype, device=y.device)
    count = F.fold(F.unfold(ones, kernel, stride=stride), size, kernel, stride=stride)
    return total / count


def _strip(model_fn, x, p, stride, scale, crop_batch_size, along):
    """A strip of height ``p`` (``along='w'``) or width ``p`` (``along='h'``) processed with windows along its
    length: overlap-add of the full outputs, then the interior replaced by the average of the outputs cut by
    ``m*s`` on both ends of the strip direction (official ``cut_h`` / ``cut_w``)."""
    m = stride  # margin = P / 4 LR pixels
    ps, ms, ss = p * scale, m * scale, stride * scale
    y = _run(model_fn, _windows(x, p, stride), crop_batch_size)
    if along == 'w':
        length = (x.size(3) - (x.size(3) - p) % stride) * scale
        out = _overlap_add(y, (ps, length), ps, ss)
        inner = _average(y[..., :, ms:ps - ms], (ps, length - 2 * ms), (ps, ps - 2 * ms), ss)
        out[..., :, ms:length - ms] = inner
    else:
        length = (x.size(2) - (x.size(2) - p) % stride) * scale
        out = _overlap_add(y, (length, ps), ps, ss)
        inner = _average(y[..., ms:ps - ms, :], (length - 2 * ms, ps), (ps - 2 * ms, ps), ss)
        out[..., ms:length - ms, :] = inner
    return out


@torch.no_grad()
def forward_chop(model_fn, x, scale, patch_size=48, crop_batch_size=64):
    """Tiled inference of the official release. ``x [1, C, h, w]`` with ``h, w >= patch_size``; ``model_fn``
    maps ``[K, C, P, P] -> [K, C, P*s, P*s]``. Returns ``[1, C, h*s, w*s]``."""
    if x.dim() != 4 or x.size(0) != 1:
        raise ValueError(f'forward_chop takes one image [1, C, h, w], got shape {tuple(x.shape)}')
    h, w = x.shape[-2:]
    p = int(patch_size)
    if h < p or w < p:
        raise ValueError(f'image {h}x{w} is smaller than the {p}x{p} window')
    if p % 4:
        raise ValueError(f'patch_size {p} must be divisible by 4 (stride P/4)')
    stride = p // 4                          # official: shave = P/2, stride = shave/2
    m, s = stride, scale                     # margin cut from each window side (LR pixels)
    h_cut, w_cut = (h - p) % stride, (w - p) % stride
    H, W = h - h_cut, w - w_cut
    ps, ms, ss = p * s, m * s, stride * s

    y_corner = model_fn(x[..., h - p:, w - p:])
    y_bottom = _strip(model_fn, x[..., h - p:, :], p, stride, s, crop_batch_size, 'w')
    y_right = _strip(model_fn, x[..., :, w - p:], p, stride, s, crop_batch_size, 'h')
    y_top = _strip(model_fn, x[..., :p, :], p, stride, s, crop_batch_size, 'w')
    y_left = _strip(model_fn, x[..., :, :p], p, stride, s, crop_batch_size, 'h')

    y_grid = _run(model_fn, _windows(x, p, stride), crop_batch_size)
    y = _overlap_add(y_grid, (H * s, W * s), ps, ss)
    y[..., :ps, :] = y_top
    y[..., :, :ps] = y_left
    y[..., ms:H * s - ms, ms:W * s - ms] = _average(y_grid[..., ms:ps - ms, ms:ps - ms],
                                                    ((H - 2 * m) * s, (W - 2 * m) * s), ps - 2 * ms, ss)

    a_h, b_h = int((p - h_cut) / 2 * s), int((p - h_cut) / 2 * s + 0.5)
    a_w, b_w = int((p - w_cut) / 2 * s), int((p - w_cut) / 2 * s + 0.5)
    y = torch.cat([y[..., :y.size(2) - a_h, :], y_bottom[..., b_h:, :]], dim=2)
    right = torch.cat([y_right[..., :y_right.size(2) - a_h, :], y_corner[..., b_h:, :]], dim=2)
    return torch.cat([y[..., :, :y.size(3) - a_w], right[..., :, b_w:]], dim=3)


@torch.no_grad()
def forward_x8(model_fn, x):
    """Self-ensemble: the mean over the 8 flips/transposes of ``x`` of the inverse-transformed outputs."""
    outs = []
    for t in range(2):
        for v in range(2):
            for hf in range(2):
                z = x.transpose(-1, -2) if t else x
                z = z.flip(-1) if v else z
                z = z.flip(-2) if hf else z
                y = model_fn(z)
                y = y.flip(-2) if hf else y
                y = y.flip(-1) if v else y
                outs.append(y.transpose(-1, -2) if t else y)
    return torch.stack(outs).mean(0)
