"""Tiled test (forward_chop), self-ensemble, PSNR and quantisation on hand-made images."""
import math

import pytest
import torch
import torch.nn.functional as F

import chop
from metrics import calc_psnr, calc_ssim, quantize


def pointwise_stub(scale):
    """A model without cross-patch context: per-pixel affine map, then nearest upsampling."""
    w = torch.tensor([[0.5, 0.2, 0.1], [0.0, 1.0, 0.3], [0.2, 0.0, 0.7]])
    return lambda z: F.interpolate(torch.einsum('oc,bchw->bohw', w, z) + 3.0, scale_factor=scale, mode='nearest')


@pytest.mark.parametrize('scale', [1, 2, 3, 4])
@pytest.mark.parametrize('hw', [(48, 48), (50, 61), (77, 100), (60, 48)])
def test_tiling_equals_untiled_for_stub(scale, hw):
    torch.manual_seed(0)
    x = torch.rand(1, 3, *hw) * 255
    f = pointwise_stub(scale)
    y = chop.forward_chop(f, x, scale, patch_size=48, crop_batch_size=7)
    assert y.shape == (1, 3, hw[0] * scale, hw[1] * scale)
    assert torch.allclose(y, f(x), atol=1e-3)


def test_tiling_windows_are_patch_sized_and_batched():
    seen = []

    def f(z):
        seen.append(tuple(z.shape))
        return z
    chop.forward_chop(f, torch.rand(1, 3, 40, 52), 1, patch_size=24, crop_batch_size=4)
    assert all(s[1:] == (3, 24, 24) and s[0] <= 4 for s in seen)
    # grid (40-24)//6+1 = 3 rows x (52-24)//6+1 = 5 cols = 15 windows, strips 5+5+3+3, corner 1
    assert sum(s[0] for s in seen) == 15 + 5 + 5 + 3 + 3 + 1


def test_tiling_uses_the_official_band_for_context_models():
    """With a 5x5 conv (context) the interior is exact but the top-left band written by the left strip is not:
    the official algorithm overwrites Y[:, :P] with uncropped left-strip outputs (card, step 3)."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 3, 5, padding=2).double()
    x = torch.rand(1, 3, 77, 100).double()
    with torch.no_grad():
        d = (chop.forward_chop(conv, x, 1) - conv(x)).abs().amax(1)[0]
    assert d[12:60, 12:88].max() < 1e-9          # averaged interior
    assert d[:12, 46:48].max() > 1e-3            # left-strip window edge inside the top band


def test_chop_rejects_small_or_batched_input():
    with pytest.raises(ValueError, match='smaller'):
        chop.forward_chop(lambda z: z, torch.rand(1, 3, 40, 60), 1)
    with pytest.raises(ValueError, match='one image'):
        chop.forward_chop(lambda z: z, torch.rand(2, 3, 48, 48), 1)


def test_self_ensemble_inverts_transforms():
    x = torch.rand(1, 3, 5, 7)
    assert torch.allclose(chop.forward_x8(lambda z: 2 * z + 1, x), 2 * x + 1)
    # a non-equivariant map is averaged over the 8 dihedral transforms: a column ramp becomes symmetric
    ramp = lambda z: z + torch.arange(z.size(-1), dtype=z.dtype)  # noqa: E731
    y = chop.forward_x8(ramp, torch.zeros(1, 1, 4, 4))
    assert torch.allclose(y, torch.full_like(y, 1.5))


def test_quantize():
    img = torch.tensor([-3.0, 0.4, 0.5, 1.5, 127.49, 254.6, 300.0])
    assert torch.equal(quantize(img), torch.tensor([0.0, 0.0, 0.0, 2.0, 127.0, 255.0, 255.0]))
    assert torch.allclose(quantize(torch.tensor([0.5, 0.71]), rgb_range=1), torch.tensor([128 / 255, 181 / 255]))


def test_psnr_hand_values():
    hr = torch.zeros(1, 3, 6, 6)
    sr = hr.clone()
    sr[:, :, 2:4, 2:4] = 255.0  # 4 of 36 pixels white in all channels
    y = (65.738 + 129.057 + 25.064) / 256  # luma of a unit RGB difference
    assert calc_psnr(sr, hr, 1, cal_type='y') == pytest.approx(-10 * math.log10(y ** 2 * 4 / 36))
    assert calc_psnr(sr, hr, 1, cal_type='rgb') == pytest.approx(-10 * math.log10(4 / 36))
    # shave `scale` pixels on every side for SR: 2x2 centre of the 6x6 is the white block
    assert calc_psnr(sr, hr, 2, cal_type='y') == pytest.approx(-10 * math.log10(y ** 2))
    # green-only error weighs 129.057/256 in Y
    sr2 = hr.clone()
    sr2[:, 1] = 51.0
    assert calc_psnr(sr2, hr, 1) == pytest.approx(-10 * math.log10((0.2 * 129.057 / 256) ** 2))
    assert calc_psnr(hr, hr, 1) == float('inf')
    with pytest.raises(ValueError, match='shape'):
        calc_psnr(hr, torch.zeros(1, 3, 5, 5), 1)


def test_ssim_identity_and_drop():
    torch.manual_seed(0)
    a = torch.rand(1, 3, 32, 32) * 255
    assert calc_ssim(a, a) == pytest.approx(1.0)
    assert calc_ssim(a + 40 * torch.randn_like(a), a) < 0.9
