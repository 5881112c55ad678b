"""Enhance a folder of WAV files with a trained checkpoint:

    python enhance.py --ckpt output/taylorsenet/best.pth --input noisy_dir --output enhanced_dir

Recipe: c = sqrt(L / sum y^2) -> y c -> STFT -> compress -> net -> decompress -> iSTFT(length=L) -> / c.
Whole utterances are processed at once (the default IN normalisation uses utterance-level statistics).
The network's arguments come from the ``config`` stored in checkpoints written by ``main.py``.
"""
import argparse
import os

import numpy as np
import torch

from common.checkpoint import load_checkpoint, load_state_dict
from common.dist import resolve_device
from common.errors import CheckpointError, DatasetError, guard

import data as sedata
from model import TaylorSENet
from stft import STFTFrontEnd, variance_normalize


def load_model(ckpt_path, device='cpu'):
    state = load_checkpoint(ckpt_path)
    cfg = state.get('config')
    if not cfg or 'model' not in cfg:
        raise CheckpointError(f'{ckpt_path} has no "config" entry with the model arguments (written by main.py)')
    net = TaylorSENet(**cfg['model'])
    load_state_dict(net, state['model'])
    st = cfg.get('stft', {})
    front = STFTFrontEnd(cfg['model'].get('fft_num', 320), st.get('win_length', 320), st.get('hop_length', 160),
                         st.get('compress', 0.5))
    return net.to(device).eval(), front


@torch.no_grad()
def enhance_wave(net, front, wav, device='cpu', variance_norm=True):
    """1-D float waveform (numpy or tensor) at 16 kHz -> enhanced numpy waveform at the input's scale."""
    y = torch.as_tensor(np.asarray(wav, dtype=np.float32), device=device)[None]
    c = torch.ones(1, 1, device=device)
    if variance_norm:
        y, c = variance_normalize(y)
    out = front.decode(net(front.encode(y)), y.shape[-1]) / c
    return out[0].cpu().numpy()


def main(argv=None):
    ap = argparse.ArgumentParser(description='Enhance a folder of WAV files with a TaylorSENet checkpoint')
    ap.add_argument('--ckpt', required=True)
    ap.add_argument('--input', required=True, help='folder of noisy .wav files (any rate; resampled to 16 kHz)')
    ap.add_argument('--output', required=True, help='folder for the enhanced 16 kHz 16-bit .wav files')
    ap.add_argument('--device', default='auto')
    ap.add_argument('--no-variance-norm', action='store_true')
    args = ap.parse_args(argv)
    if not os.path.isdir(args.input):
        raise DatasetError(f'input folder {args.input} does not exist')
    device = resolve_device(args.device)
    net, front = load_model(args.ckpt, device)
    os.makedirs(args.output, exist_ok=True)
    names = sedata._list_wavs(args.input)
    for name in names:
        wav = sedata.read_wav(os.path.join(args.input, name))
        sedata.write_wav(os.path.join(args.output, name),
                         enhance_wave(net, front, wav, device, not args.no_variance_norm))
    print(f'enhanced {len(names)} files into {args.output}')
    return names


if __name__ == '__main__':
    guard(main)
