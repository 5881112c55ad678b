"""STFT front end, ComMag loss on fixed inputs, metrics, the halving rule and NaN step skipping."""
import math

import numpy as np
import pytest
import torch

import losses
import metrics
from solver import PlateauHalving, Solver
from stft import STFTFrontEnd, variance_normalize


def test_stft_shapes_and_frame_count():
    fe = STFTFrontEnd()
    spec = fe.encode(torch.randn(2, 16000))
    assert spec.shape == (2, 2, 101, 161)
    assert fe.frame_count([16000, 3200, 100]) == [101, 21, 1]


def test_stft_round_trip():
    fe = STFTFrontEnd()
    wav = torch.randn(3, 12345, dtype=torch.float64)
    assert torch.allclose(fe.decode(fe.encode(wav), 12345), wav, atol=1e-9)
    wav32 = torch.randn(1, 8000)
    assert torch.allclose(fe.decode(fe.encode(wav32), 8000), wav32, atol=1e-4)


def test_compression_is_sqrt_magnitude_with_phase_kept():
    fe = STFTFrontEnd()
    wav = torch.randn(1, 3200, dtype=torch.float64)
    z = torch.stft(wav, 320, 160, 320, torch.hann_window(320, dtype=torch.float64), center=True,
                   return_complex=True).transpose(-2, -1)
    spec = fe.encode(wav)
    assert torch.allclose(torch.norm(spec, dim=1), z.abs().sqrt(), atol=1e-9)
    unit = z / z.abs().clamp_min(1e-30)                       # phase kept (compare e^{j phi}, no 2 pi wrap)
    assert torch.allclose(spec[:, 0] / torch.norm(spec, dim=1).clamp_min(1e-30), unit.real, atol=1e-9)
    assert torch.allclose(spec[:, 1] / torch.norm(spec, dim=1).clamp_min(1e-30), unit.imag, atol=1e-9)


def test_variance_normalize_unit_rms():
    y = torch.randn(2, 1000) * torch.tensor([[0.01], [3.0]])
    yn, c = variance_normalize(y)
    assert torch.allclose(yn.pow(2).mean(-1), torch.ones(2), atol=1e-5)
    assert torch.allclose(yn / c, y)


def _hand_loss(est, lab, frames, alpha, l1=False):
    e, l = est.numpy(), lab.numpy()
    f = np.abs if l1 else np.square
    ri = mag = 0.0
    n = 0
    for b, tb in enumerate(frames):
        for t in range(tb):
            for k in range(e.shape[-1]):
                ri += f(e[b, 0, t, k] - l[b, 0, t, k]) + f(e[b, 1, t, k] - l[b, 1, t, k])
                mag += f(math.hypot(e[b, 0, t, k], e[b, 1, t, k]) - math.hypot(l[b, 0, t, k], l[b, 1, t, k]))
                n += 1
    return alpha * ri / (2 * n) + (1 - alpha) * mag / n


def test_commag_loss_fixed_inputs():
    est = torch.tensor([[[[1., 0.], [2., 1.], [9., 9.]], [[0., 1.], [0., -1.], [9., 9.]]],
                        [[[3., 4.], [0., 0.], [0., 0.]], [[0., 0.], [1., 1.], [0., 0.]]]])
    lab = torch.zeros_like(est)
    lab[0, 0] = 1.0
    # utterance 0 has 2 valid frames (the 9s are padding), utterance 1 has 3
    loss = losses.ComMagEuclideanLoss(0.5, 'L2')(est, lab, [2, 3])
    # hand: RI squared errors over valid entries; magnitudes |est| vs |lab|
    ri = (0 + 1 + 1 + 0) + (0 + 1 + 0 + 1) + (9 + 16 + 0 + 0 + 0 + 0) + (0 + 0 + 1 + 1 + 0 + 0)
    m0 = [0, 0, (2 - 1) ** 2, (math.sqrt(2) - 1) ** 2]          # |est| 1, 1, 2, sqrt 2 vs |label| 1
    m1 = [9, 16, 1, 1, 0, 0]                                      # |est| 3, 4, 1, 1, 0, 0 vs 0
    expected = 0.5 * ri / (2 * 10) + 0.5 * sum(m0 + m1) / 10
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert loss.item() == pytest.approx(_hand_loss(est, lab, [2, 3], 0.5), rel=1e-6)


def test_commag_loss_l1_alpha_and_stagewise():
    g = torch.Generator().manual_seed(0)
    est, lab = torch.randn(2, 2, 4, 3, generator=g), torch.randn(2, 2, 4, 3, generator=g)
    l1 = losses.ComMagEuclideanLoss(0.3, 'L1')(est, lab, [4, 2]).item()
    assert l1 == pytest.approx(_hand_loss(est, lab, [4, 2], 0.3, l1=True), rel=1e-6)
    full = losses.ComMagEuclideanLoss()(est, lab, [4, 2])
    st = losses.StagewiseComMagEuclideanLoss(0.1, 1.0)([est * 0.5, est], lab, [4, 2])
    assert st.item() == pytest.approx(0.1 * losses.ComMagEuclideanLoss()(est * 0.5, lab, [4, 2]).item()
                                      + full.item(), rel=1e-6)
    with pytest.raises(ValueError):
        losses.ComMagEuclideanLoss(0.5, 'L3')


def test_sisnr_and_si_sdr():
    rng = np.random.default_rng(0)
    s = rng.standard_normal(1000)
    n = rng.standard_normal(1000)
    n -= n @ s / (s @ s) * s                                 # orthogonal to s
    n *= np.sqrt((s @ s) / (n @ n) / 10)                     # 10 dB below
    assert metrics.sisnr(3 * (s + n), s) == pytest.approx(10.0, abs=1e-6)
    assert metrics.si_sdr(s + 5.0, s) > 100                  # mean removed
    assert metrics.sisnr(s + 5.0, s) < 10


def test_pesq_stoi_optional():
    try:
        import pesq  # noqa: F401
    except ImportError:
        with pytest.raises(metrics.OptionalMetricMissing, match='pesq'):
            metrics.pesq_wb(np.zeros(16000), np.zeros(16000))
        pytest.skip('optional package "pesq" is not installed; PESQ is skipped (pip install pesq)')
    t = np.arange(32000) / 16000
    s = np.sin(2 * np.pi * 200 * t) * (np.sin(2 * np.pi * 3 * t) > 0)
    assert metrics.pesq_wb(s, s) > 4.0


def test_nb_mapping_inverse():
    raw = 2.5
    mos = 0.999 + 4.0 / (1 + math.exp(-1.4945 * raw + 4.6607))
    assert metrics.mos_lqo_to_raw(mos) == pytest.approx(raw)


def test_plateau_halving_against_previous_epoch():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([p], lr=1.0)
    rule = PlateauHalving()
    stops = [rule.step(v, opt) for v in (1.0, 2.0, 1.5, 1.6, 1.2, 1.1, 1.0)]
    # 1.5 (miss 1), 1.6 > 1.5 improves on the previous epoch (reset), 1.2 miss 1, 1.1 miss 2 -> halve, 1.0 stop
    assert stops == [False] * 6 + [True]
    assert opt.param_groups[0]['lr'] == 0.5


def test_nan_gradients_skip_the_step():
    net = torch.nn.Sequential()

    class Bad(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(1))

        def forward(self, x):
            return x * self.w * torch.tensor(float('nan'))

    bad = Bad()
    opt = torch.optim.Adam(bad.parameters(), lr=0.1)
    s = Solver(bad, opt)
    _, applied = s.train_batch(torch.randn(1, 1600), torch.randn(1, 1600), torch.tensor([1600]))
    assert not applied and s.skipped_steps == 1 and bad.w.item() == 1.0
    del net
