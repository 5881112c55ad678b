"""STFT front end of TaylorSENet: 20 ms periodic Hann window, 10 ms hop, n_fft 320 (161 bins), center=True,
power-law magnitude compression (|Z|^0.5, phase kept), layout (B, 2, T, F). Imports only torch."""
import torch
from torch import Tensor


class STFTFrontEnd:
    """``encode``: wav (B, L) -> compressed spectrum (B, 2, T, F); ``decode``: the inverse, with ``length``."""

    def __init__(self, n_fft=320, win_length=320, hop_length=160, compress=0.5, center=True):
        if not 0 < compress <= 1:
            raise ValueError(f'compress must be in (0, 1], got {compress}')
        if win_length > n_fft or hop_length <= 0:
            raise ValueError('need 0 < hop_length and win_length <= n_fft')
        self.n_fft, self.win_length, self.hop_length = n_fft, win_length, hop_length
        self.compress, self.center = compress, center

    def window(self, ref: Tensor) -> Tensor:
        """Periodic Hann window in the dtype/device of ``ref``."""
        return torch.hann_window(self.win_length, dtype=ref.dtype, device=ref.device)

    def stft(self, wav: Tensor) -> Tensor:
        """Complex STFT (B, F, T)."""
        return torch.stft(wav, self.n_fft, self.hop_length, self.win_length, self.window(wav), center=self.center,
                          return_complex=True)

    def istft(self, spec: Tensor, length: int) -> Tensor:
        return torch.istft(spec, self.n_fft, self.hop_length, self.win_length, self.window(spec.real),
                           center=self.center, length=length)

    def encode(self, wav: Tensor) -> Tensor:
        """wav (B, L) -> C(Y) as (B, 2, T, F) with C(Z) = |Z|^compress e^{j angle Z}."""
        z = self.stft(wav)
        mag = z.abs().pow(self.compress)
        phase = torch.angle(z)
        return torch.stack((mag * torch.cos(phase), mag * torch.sin(phase)), dim=1).transpose(-2, -1)

    def decode(self, spec: Tensor, length: int) -> Tensor:
        """(B, 2, T, F) compressed -> waveform (B, length): |Z|^(1/compress) with the phase kept, then iSTFT."""
        spec = spec.transpose(-2, -1)
        mag = torch.norm(spec, dim=1).pow(1.0 / self.compress)
        phase = torch.atan2(spec[:, 1], spec[:, 0])
        return self.istft(torch.polar(mag, phase), length)

    def frame_count(self, lengths):
        """Valid frames per utterance: L // hop + 1 (center=True)."""
        return [int(n) // self.hop_length + 1 for n in lengths]


def variance_normalize(wav: Tensor, eps: float = 1e-12):
    """Per-utterance scale c = sqrt(L / sum y^2) (last axis); returns (wav * c, c) with c shaped to broadcast."""
    c = torch.sqrt(wav.shape[-1] / (wav.pow(2).sum(dim=-1, keepdim=True) + eps))
    return wav * c, c
