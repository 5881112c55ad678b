"""Speech enhancement data (glue: raises common's DatasetError).

- ``SyntheticSpeechNoise``: the embedded default, no files. Voiced speech-like signals (harmonics of a gliding
  F0 shaped by three moving formant resonances, a ~4 Hz syllable envelope with pauses, short unvoiced bursts)
  mixed with generated noises (white, pink, brown, babble of other synthetic talkers, amplitude-modulated) at
  SNRs drawn from ``snr_range``. Deterministic from (seed, split, index).
- ``InstanceDataset``: paired noisy/clean WAV folders (VoiceBank+DEMAND names, or DNS ``..._fileid_N.wav`` ->
  ``clean_fileid_N.wav``).
- ``MixtureDataset``: WSJ0/DNS-style on-the-fly mixtures of a clean folder and a noise folder at given SNRs.
WAV files are read with the standard ``wave`` module and resampled to 16 kHz with numpy. Every item is
``(noisy, clean)`` float32 tensors, variance-normalised with the mixture's scale when ``is_variance_norm``;
``collate`` pads to the longest and adds the true lengths (the loss masks padded frames).
"""
import os
import wave
import zlib

import numpy as np
import torch
from torch.utils.data import Dataset

from common.errors import DatasetError

SR = 16000


# ----------------------------------------------------------------------------------------- WAV i/o
def read_wav(path, sr=SR):
    """Mono float32 in [-1, 1] at ``sr`` (channels averaged, resampled with an FFT resampler)."""
    try:
        with wave.open(str(path), 'rb') as w:
            ch, width, rate, n = w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()
            raw = w.readframes(n)
    except (wave.Error, EOFError, OSError) as e:
        raise DatasetError(f'cannot read WAV file {path}: {e} (16/24/32-bit or 8-bit PCM WAV expected)') from e
    if width == 1:
        x = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 2:
        x = np.frombuffer(raw, '<i2').astype(np.float32) / 32768.0
    elif width == 3:
        b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        x = (np.where(v >= 1 << 23, v - (1 << 24), v)).astype(np.float32) / float(1 << 23)
    elif width == 4:
        x = np.frombuffer(raw, '<i4').astype(np.float32) / float(1 << 31)
    else:
        raise DatasetError(f'{path}: unsupported sample width {width} bytes')
    x = x.reshape(-1, ch).mean(axis=1)
    return resample(x, rate, sr)


def write_wav(path, x, sr=SR):
    """16-bit PCM mono."""
    x = np.clip(np.asarray(x, dtype=np.float64), -1.0, 1.0)
    with wave.open(str(path), 'wb') as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes((x * 32767.0).round().astype('<i2').tobytes())


def resample(x, sr_in, sr_out):
    """Band-limited resampling via the real FFT (truncate or zero-pad the spectrum)."""
    if sr_in == sr_out or len(x) == 0:
        return np.asarray(x, dtype=np.float32)
    n_out = int(round(len(x) * sr_out / sr_in))
    spec = np.fft.rfft(x)
    n_bins = n_out // 2 + 1
    spec = spec[:n_bins] if len(spec) >= n_bins else np.pad(spec, (0, n_bins - len(spec)))
    return (np.fft.irfft(spec, n_out) * (n_out / len(x))).astype(np.float32)


def mix_at_snr(clean, noise, snr_db, eps=1e-10):
    """noise scaled so that 10 log10(|clean|^2 / |noise|^2) = snr_db; returns (mixture, scaled noise)."""
    if len(noise) < len(clean):
        noise = np.tile(noise, int(np.ceil(len(clean) / max(len(noise), 1))))
    noise = noise[:len(clean)]
    scale = np.sqrt(np.sum(clean ** 2) / (np.sum(noise ** 2) + eps) / 10 ** (snr_db / 10))
    noise = noise * scale
    return clean + noise, noise


# ----------------------------------------------------------------------------------------- synthetic
def _formant_gain(freq, centres, bws):
    """Sum of resonance magnitude responses (Lorentzian-shaped) at ``freq``; shapes broadcast."""
    g = 0.0
    for i, (fc, bw) in enumerate(zip(centres, bws)):
        g = g + (0.7 ** i) / np.sqrt(1.0 + ((freq - fc) / (bw / 2)) ** 2)
    return g


def synth_speech(rng, n, sr=SR):
    """One speech-like utterance of ``n`` samples (float64, peak-free scale ~0.1 RMS)."""
    t = np.arange(n) / sr
    # F0: speaker base 90..240 Hz with slow prosodic glides
    f0 = rng.uniform(90, 240) * (1 + 0.12 * np.sin(2 * np.pi * rng.uniform(0.3, 1.2) * t + rng.uniform(0, 6.3)))
    phase0 = 2 * np.pi * np.cumsum(f0) / sr
    # formant trajectories: piecewise-linear through random vowel targets every ~syllable
    n_knots = max(2, int(n / sr * 5) + 2)
    knots = np.linspace(0, n - 1, n_knots)
    f1 = np.interp(np.arange(n), knots, rng.uniform(300, 850, n_knots))
    f2 = np.interp(np.arange(n), knots, rng.uniform(850, 2300, n_knots))
    f3 = np.interp(np.arange(n), knots, rng.uniform(2300, 3300, n_knots))
    n_harm = int(7600 / f0.min())
    voiced = np.zeros(n)
    for k in range(1, n_harm + 1):
        fk = k * f0
        amp = _formant_gain(fk, (f1, f2, f3), (90.0, 130.0, 200.0)) * (fk < 7800) / k ** 0.5
        voiced += amp * np.sin(k * phase0)
    # syllable envelope ~4 Hz with pauses
    rate = rng.uniform(3.0, 5.0)
    env = np.clip(np.sin(2 * np.pi * rate * t + rng.uniform(0, 6.3)), 0, None) ** 0.7
    n_seg = max(1, int(n / sr * 2))
    gate = np.repeat(rng.uniform(size=n_seg) > 0.25, int(np.ceil(n / n_seg)))[:n].astype(float)
    gate = np.convolve(gate, np.hanning(801) / np.hanning(801).sum(), mode='same')
    env = env * gate
    # unvoiced bursts (fricative-like high-passed noise) in some envelope troughs
    hiss = np.diff(rng.standard_normal(n + 1)) * 0.15
    burst = np.clip(np.sin(2 * np.pi * rate * t + rng.uniform(0, 6.3)), 0, None) ** 4 * (rng.uniform() < 0.7)
    s = voiced * env + hiss * burst * gate
    return 0.1 * s / (np.sqrt(np.mean(s ** 2)) + 1e-8)


def _colored(rng, n, beta):
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n)
    f[0] = f[1]
    return np.fft.irfft(spec / f ** (beta / 2), n)


NOISE_TYPES = ('white', 'pink', 'brown', 'babble', 'modulated')


def synth_noise(rng, n, kind, sr=SR):
    if kind == 'white':
        x = rng.standard_normal(n)
    elif kind == 'pink':
        x = _colored(rng, n, 1.0)
    elif kind == 'brown':
        x = _colored(rng, n, 2.0)
    elif kind == 'babble':
        x = sum(synth_speech(rng, n, sr) for _ in range(4))
    elif kind == 'modulated':
        t = np.arange(n) / sr
        x = _colored(rng, n, 0.5) * (1 + 0.8 * np.sin(2 * np.pi * rng.uniform(0.5, 8) * t))
    else:
        raise ValueError(f'unknown noise type {kind!r}; valid: {NOISE_TYPES}')
    return x / (np.sqrt(np.mean(x ** 2)) + 1e-8)


def variance_normalize_np(noisy, clean):
    c = np.sqrt(len(noisy) / (np.sum(noisy ** 2) + 1e-12))
    return noisy * c, clean * c


class SyntheticSpeechNoise(Dataset):
    """Synthetic (noisy, clean) pairs; lengths uniform in [min_seconds, max_seconds] (frame-aligned)."""

    def __init__(self, size=200, min_seconds=1.0, max_seconds=1.5, snr_range=(-5.0, 5.0), noise_types=NOISE_TYPES,
                 split='train', seed=0, is_variance_norm=True, sr=SR):
        if size < 1:
            raise DatasetError(f'synthetic dataset size must be >= 1, got {size}')
        if not 0 < min_seconds <= max_seconds:
            raise DatasetError(f'need 0 < min_seconds <= max_seconds, got {min_seconds}, {max_seconds}')
        bad = [k for k in noise_types if k not in NOISE_TYPES]
        if bad or not noise_types:
            raise DatasetError(f'unknown noise types {bad}; valid: {NOISE_TYPES}')
        self.size, self.min_s, self.max_s = size, min_seconds, max_seconds
        self.snr_range, self.noise_types = tuple(snr_range), tuple(noise_types)
        self.split_id = zlib.crc32(split.encode()) % 100003
        self.seed, self.norm, self.sr = seed, is_variance_norm, sr

    def __len__(self):
        return self.size

    def item(self, index):
        """(noisy, clean, snr_db, noise_type) as numpy, before normalisation."""
        rng = np.random.default_rng([self.seed, self.split_id, index])
        n = int(rng.uniform(self.min_s, self.max_s) * self.sr)
        clean = synth_speech(rng, n, self.sr)
        kind = self.noise_types[rng.integers(len(self.noise_types))]
        snr = rng.uniform(*self.snr_range)
        noisy, _ = mix_at_snr(clean, synth_noise(rng, n, kind, self.sr), snr)
        return noisy, clean, snr, kind

    def __getitem__(self, index):
        noisy, clean, _, _ = self.item(index)
        if self.norm:
            noisy, clean = variance_normalize_np(noisy, clean)
        return torch.from_numpy(noisy.astype(np.float32)), torch.from_numpy(clean.astype(np.float32))


# ----------------------------------------------------------------------------------------- WAV folders
def _list_wavs(folder):
    if not os.path.isdir(folder):
        raise DatasetError(f'folder {folder} does not exist')
    files = sorted(f for f in os.listdir(folder) if f.lower().endswith('.wav'))
    if not files:
        raise DatasetError(f'folder {folder} holds no .wav files')
    return files


def _clean_name(noisy_name, clean_names):
    if noisy_name in clean_names:                       # VoiceBank+DEMAND: same file names
        return noisy_name
    if '_fileid_' in noisy_name:                        # DNS: ..._fileid_N.wav -> clean_fileid_N.wav
        cand = 'clean_fileid_' + noisy_name.rsplit('_fileid_', 1)[1]
        if cand in clean_names:
            return cand
    return None


def _chunk(rng, arrays, chunk_samples):
    n = len(arrays[0])
    if chunk_samples and n > chunk_samples:
        start = int(rng.integers(0, n - chunk_samples + 1))
        arrays = [a[start:start + chunk_samples] for a in arrays]
    return arrays


class InstanceDataset(Dataset):
    """Paired WAV folders ``root/<split>/noisy`` and ``root/<split>/clean`` (or ``mix_dir``/``clean_dir``).
    Training items longer than ``chunk_length`` seconds are cropped at a random offset shared by both signals."""

    def __init__(self, root, split='train', chunk_length=8.0, is_chunk=True, is_variance_norm=True, sr=SR, seed=0,
                 mix_dir=None, clean_dir=None):
        base = os.path.join(root or '', split)
        self.mix_dir = mix_dir or os.path.join(base, 'noisy')
        self.clean_dir = clean_dir or os.path.join(base, 'clean')
        if not (os.path.isdir(self.mix_dir) and os.path.isdir(self.clean_dir)):
            raise DatasetError(f'expected paired WAV folders {self.mix_dir} and {self.clean_dir} '
                               '(layout root/<split>/noisy/*.wav + root/<split>/clean/*.wav; names equal, or DNS '
                               '"..._fileid_N.wav" -> "clean_fileid_N.wav")')
        clean = set(_list_wavs(self.clean_dir))
        self.pairs = []
        for name in _list_wavs(self.mix_dir):
            match = _clean_name(name, clean)
            if match is None:
                raise DatasetError(f'no clean file for {os.path.join(self.mix_dir, name)} in {self.clean_dir}')
            self.pairs.append((name, match))
        self.chunk = int(chunk_length * sr) if is_chunk else 0
        self.norm, self.sr, self.seed, self.epoch = is_variance_norm, sr, seed, 0

    def __len__(self):
        return len(self.pairs)

    def __getitem__(self, index):
        m, c = self.pairs[index]
        noisy = read_wav(os.path.join(self.mix_dir, m), self.sr).astype(np.float64)
        clean = read_wav(os.path.join(self.clean_dir, c), self.sr).astype(np.float64)
        n = min(len(noisy), len(clean))
        noisy, clean = _chunk(np.random.default_rng([self.seed, self.epoch, index]), [noisy[:n], clean[:n]],
                              self.chunk)
        if self.norm:
            noisy, clean = variance_normalize_np(noisy, clean)
        return torch.from_numpy(noisy.astype(np.float32)), torch.from_numpy(clean.astype(np.float32))


class MixtureDataset(Dataset):
    """WSJ0/DNS-style mixtures: clean utterances from ``clean_dir`` plus a noise clip from ``noise_dir`` (random
    segment) at an SNR drawn from ``snrs`` (a list), deterministic from (seed, index); ``size`` mixtures."""

    def __init__(self, clean_dir, noise_dir, snrs=(-5, -4, -3, -2, -1, 0), size=1000, chunk_length=8.0,
                 is_chunk=True, is_variance_norm=True, sr=SR, seed=0):
        self.clean_dir, self.noise_dir = clean_dir, noise_dir
        self.clean, self.noise = _list_wavs(clean_dir), _list_wavs(noise_dir)
        if not snrs:
            raise DatasetError('snrs must list at least one SNR')
        self.snrs, self.size, self.seed = list(snrs), size, seed
        self.chunk = int(chunk_length * sr) if is_chunk else 0
        self.norm, self.sr = is_variance_norm, sr

    def __len__(self):
        return self.size

    def __getitem__(self, index):
        rng = np.random.default_rng([self.seed, index])
        clean = read_wav(os.path.join(self.clean_dir, self.clean[rng.integers(len(self.clean))]), self.sr)
        noise = read_wav(os.path.join(self.noise_dir, self.noise[rng.integers(len(self.noise))]), self.sr)
        clean = _chunk(rng, [clean.astype(np.float64)], self.chunk)[0]
        if len(noise) > len(clean):
            start = int(rng.integers(0, len(noise) - len(clean) + 1))
            noise = noise[start:start + len(clean)]
        noisy, _ = mix_at_snr(clean, noise.astype(np.float64), float(self.snrs[rng.integers(len(self.snrs))]))
        if self.norm:
            noisy, clean = variance_normalize_np(noisy, clean)
        return torch.from_numpy(noisy.astype(np.float32)), torch.from_numpy(clean.astype(np.float32))


def collate(batch):
    """Pad to the longest item; returns (noisy (B, L), clean (B, L), lengths (B,))."""
    lengths = torch.tensor([len(x) for x, _ in batch])
    n = int(lengths.max())
    noisy = torch.zeros(len(batch), n)
    clean = torch.zeros(len(batch), n)
    for i, (x, s) in enumerate(batch):
        noisy[i, :len(x)] = x
        clean[i, :len(s)] = s
    return noisy, clean, lengths
