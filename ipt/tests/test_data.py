"""Corruptions (MATLAB bicubic, noise, rain), crops, one task per batch, benchmark layouts."""
import numpy as np
import pytest
import torch

import data as D


def test_parse_task():
    assert D.parse_task('sr3') == ('sr', 3, None)
    assert D.parse_task('denoise50') == ('denoise', 1, 50.0)
    assert D.parse_task('derain') == ('derain', 1, None)
    with pytest.raises(ValueError, match='unknown task'):
        D.parse_task('deblur')


def test_imresize_constant_and_linear_ramp():
    const = torch.full((3, 12, 12), 77.0)
    assert torch.equal(D.imresize_matlab(const, 0.5), torch.full((3, 6, 6), 77.0))
    # the cubic kernel reproduces linear functions: downsampling x2 of a column ramp, away from the border,
    # gives the ramp at u = 2x - 0.5 (1-based), i.e. the mean of the two source columns
    ramp = torch.arange(24, dtype=torch.float64).mul(10).expand(1, 8, 24).clone()
    out = D.imresize_matlab(ramp, 0.5, quantize=False)
    assert out.shape == (1, 4, 12)
    want = torch.tensor([10 * (2 * x + 0.5) for x in range(12)], dtype=torch.float64)
    assert torch.allclose(out[0, 0, 3:-3], want[3:-3], atol=1e-9)
    assert D.imresize_matlab(torch.rand(3, 10, 10) * 255, 1 / 3).shape == (3, 4, 4)  # ceil(10 / 3)


def test_imresize_weights_hand():
    """Row weights of the antialiased x1/2 kernel: output pixel x (1-based) sits at u = 2x - 0.5; taps at
    distances 3.5, 2.5, 1.5, 0.5, 0.5, 1.5, 2.5, 3.5 HR pixels get cubic(d / 2) / 2, normalised."""
    def cubic(x):
        x = abs(x)
        if x <= 1:
            return 1.5 * x ** 3 - 2.5 * x ** 2 + 1
        return -0.5 * x ** 3 + 2.5 * x ** 2 - 4 * x + 2 if x <= 2 else 0.0
    w = np.array([cubic(d / 2) / 2 for d in (3.5, 2.5, 1.5, 0.5, 0.5, 1.5, 2.5, 3.5)])
    w = w / w.sum()
    mat = D._resize_matrix(16, 0.5, 8).numpy()
    assert list(np.nonzero(mat[3])[0]) == list(range(3, 11))  # x = 4: HR pixels 4..11 (1-based)
    assert np.allclose(mat[3, 3:11], w)
    # edge replicate: the first output row folds its out-of-range taps onto pixel 0
    assert mat[0, 0] == pytest.approx(w[:4].sum()) and mat[0].sum() == pytest.approx(1.0)


def test_noise_and_rain():
    g = torch.Generator().manual_seed(1)
    img = torch.full((2, 3, 32, 32), 128.0)
    noisy = D.add_gaussian_noise(img, 30, g)
    assert noisy.min() >= 0 and noisy.max() <= 255
    assert (noisy - img).std().item() == pytest.approx(30, rel=0.05)
    assert not torch.equal(noisy, noisy.round())  # not quantised
    streak = D.synth_rain_streaks(32, torch.Generator().manual_seed(0))
    assert streak.shape == (1, 32, 32) and streak.min() >= 0 and 100 < streak.max() <= 230
    rainy = D.add_rain(img, streak)
    assert torch.equal(rainy[:, 0], rainy[:, 2])  # grayscale streaks broadcast to RGB
    assert torch.equal(rainy, (img + streak).clamp(0, 255))


def test_random_crop_small_image_is_resized():
    img = torch.rand(3, 20, 60) * 255
    c = D.random_crop(img, 48, torch.Generator().manual_seed(0))
    assert c.shape == (3, 48, 48)


def test_imagenet_ipt_and_task_batches():
    imgs = [torch.rand(3, 100, 120) * 255 for _ in range(4)]
    ds = D.ImageNetIPT(imgs, patch_size=24, scales=(2, 3, 4, 1))
    crops = ds[0]
    assert [c.shape[-1] for c in crops] == [48, 72, 96, 24]
    batch = [torch.stack([ds[i][k] for i in range(4)]) for k in range(4)]
    corr = D.TaskBatchCorruptor(6, seed=0, crop_scales=(2, 3, 4, 1), patch_size=24)
    for t, (shape_in, shape_out) in enumerate([(24, 48), (24, 72), (24, 96), (24, 24), (24, 24), (24, 24)]):
        inp, hr = corr(batch, t)
        assert inp.shape[-1] == shape_in and hr.shape[-1] == shape_out
    inp, hr = corr(batch, 0)
    assert torch.equal(inp, D.imresize_matlab(batch[0], 0.5))
    draws = [corr.draw(s) for s in range(600)]
    assert draws == [corr.draw(s) for s in range(600)]  # same on every process
    counts = np.bincount(draws, minlength=6)
    assert counts.min() > 60  # uniform over the six tasks
    pool = D.TaskBatchCorruptor(6, seed=0, pool=[0, 4], crop_scales=(2, 1))
    assert set(pool.draw(s) for s in range(50)) == {0, 4}
    with pytest.raises(ValueError, match='needs crops'):
        D.TaskBatchCorruptor(6, pool=[1], crop_scales=(2, 1))


def _png(path, h, w, value=100):
    from PIL import Image
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((h, w, 3), value, np.uint8)).save(path)


def test_benchmark_layouts(tmp_path):
    _png(tmp_path / 'benchmark/Set5/HR/baby.png', 51, 50)
    _png(tmp_path / 'benchmark/Set5/LR_bicubic/X2/babyx2.png', 25, 25)
    lr, hr, name = D.Benchmark('Set5', str(tmp_path), 2)[0]
    assert lr.shape == (3, 25, 25) and hr.shape == (3, 50, 50) and name == 'baby.png'
    _png(tmp_path / 'CBSD68/0001.png', 30, 30)
    inp, hr, _ = D.Benchmark('CBSD68', str(tmp_path), 1)[0]
    assert inp is None and hr.shape == (3, 30, 30)
    _png(tmp_path / 'Rain100L/rain-001.png', 30, 30, 200)
    _png(tmp_path / 'Rain100L/norain-001.png', 30, 30, 100)
    rain, clean, _ = D.Benchmark('Rain100L', str(tmp_path), 1)[0]
    assert rain.mean() == 200 and clean.mean() == 100


def test_benchmark_errors_name_the_layout(tmp_path):
    with pytest.raises(D.BenchmarkError, match='benchmark/Set14/HR'):
        D.Benchmark('Set14', str(tmp_path), 2)
    _png(tmp_path / 'benchmark/Set5/HR/baby.png', 50, 50)
    with pytest.raises(D.BenchmarkError, match='LR image'):
        D.Benchmark('Set5', str(tmp_path), 3)
    with pytest.raises(D.BenchmarkError, match='rain-'):
        D.Benchmark('Rain100L', str(tmp_path), 1)
    _png(tmp_path / 'Rain100L/rain-002.png', 30, 30)
    with pytest.raises(D.BenchmarkError, match='norain-002'):
        D.Benchmark('Rain100L', str(tmp_path), 1)
    with pytest.raises(D.BenchmarkError, match='does not exist'):
        D.ImageNetIPT(str(tmp_path / 'nope'))


def test_imagenet_ipt_reads_a_folder(tmp_path):
    _png(tmp_path / 'n01/a.JPEG', 60, 70)
    _png(tmp_path / 'n02/b.png', 30, 40, 7)
    ds = D.ImageNetIPT(str(tmp_path), patch_size=12, scales=(2, 1))
    assert len(ds) == 2
    crops = ds[1]
    assert [c.shape for c in crops] == [(3, 24, 24), (3, 12, 12)] and crops[1].mean() == 7
