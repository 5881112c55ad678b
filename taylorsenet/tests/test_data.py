"""WAV i/o, resampling, SNR mixing, folder pairing and the synthetic default."""
import numpy as np
import pytest
import torch

import data


def test_wav_round_trip_and_resample(tmp_path):
    t = np.arange(8000) / 8000
    x = 0.5 * np.sin(2 * np.pi * 440 * t)
    data.write_wav(tmp_path / 'a.wav', x, sr=8000)
    y = data.read_wav(tmp_path / 'a.wav', sr=16000)
    assert len(y) == 16000
    spec = np.abs(np.fft.rfft(y))
    assert np.argmax(spec) == 440                               # 1 s at 16 kHz: bin = Hz
    assert np.allclose(data.read_wav(tmp_path / 'a.wav', sr=8000), x, atol=1e-4)


def test_mix_at_snr_exact():
    rng = np.random.default_rng(0)
    s, n = rng.standard_normal(4000), rng.standard_normal(1000)
    mix, noise = data.mix_at_snr(s, n, -3.0)
    assert 10 * np.log10(np.sum(s ** 2) / np.sum(noise ** 2)) == pytest.approx(-3.0)
    assert np.allclose(mix - noise, s)


def test_synthetic_deterministic_and_snr():
    ds = data.SyntheticSpeechNoise(4, 0.5, 0.6, (-5, 5), seed=1)
    a, b = ds[2], ds[2]
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert a[0].pow(2).mean().item() == pytest.approx(1.0, rel=1e-4)    # variance normalised mixture
    noisy, clean, snr, kind = ds.item(2)
    assert kind in data.NOISE_TYPES
    assert 10 * np.log10(np.sum(clean ** 2) / np.sum((noisy - clean) ** 2)) == pytest.approx(snr)
    other = data.SyntheticSpeechNoise(4, 0.5, 0.6, (-5, 5), split='test', seed=1)
    assert not torch.equal(other[2][1][:100], a[1][:100])


def test_collate_pads_and_keeps_lengths():
    noisy, clean, lengths = data.collate([(torch.ones(5), torch.ones(5)), (torch.ones(3), torch.ones(3))])
    assert noisy.shape == (2, 5) and lengths.tolist() == [5, 3] and noisy[1, 3:].abs().sum() == 0


def test_instance_dataset_dns_names_and_chunk(tmp_path):
    from common.errors import DatasetError
    for d in ('noisy', 'clean'):
        (tmp_path / 'train' / d).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(2):
        s = 0.1 * rng.standard_normal(3200)
        data.write_wav(tmp_path / 'train' / 'clean' / f'clean_fileid_{i}.wav', s)
        data.write_wav(tmp_path / 'train' / 'noisy' / f'book_x_snr5_fileid_{i}.wav', s + 0.05 * rng.standard_normal(3200))
    ds = data.InstanceDataset(str(tmp_path), 'train', chunk_length=0.1)
    assert len(ds) == 2 and ds.pairs[1] == ('book_x_snr5_fileid_1.wav', 'clean_fileid_1.wav')
    noisy, clean = ds[0]
    assert len(noisy) == 1600 and noisy.pow(2).mean().item() == pytest.approx(1.0, rel=1e-3)
    with pytest.raises(DatasetError, match='noisy'):
        data.InstanceDataset(str(tmp_path), 'test')
