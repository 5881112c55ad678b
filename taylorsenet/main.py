"""TaylorSENet training: ``python main.py --cfg cfg.yaml [--opts key=value ...]``.

Trains on (noisy, clean) waveform pairs with the ComMag loss on power-compressed spectra, Adam with coupled
weight decay, global-norm clipping with NaN/Inf step skipping, per-epoch validation SI-SNR with LR halving and
early stop against the previous epoch, and ends by printing the test-set SI-SDR of the enhanced speech next to
the noisy input (plus PESQ/STOI when the optional packages are installed).
"""
import math
import os

import torch
from torch.utils.data import DataLoader

from common.checkpoint import load_checkpoint, load_state_dict
from common.config import parse_cli
from common.data import build_loader, set_epoch
from common.dist import all_reduce_mean, unwrap, wrap_ddp
from common.errors import ConfigError, guard
from common.log import AverageMeter, Throughput, progress, update_progress
from common.runner import setup_run

import data as sedata
import metrics
from losses import ComMagEuclideanLoss
from model import NORM_TYPES, TaylorSENet, num_params
from solver import Solver
from stft import STFTFrontEnd

DEFAULTS = {
    'output_dir': 'output/taylorsenet', 'seed': 0, 'device': 'auto', 'resume': True,
    'data': {'name': 'synthetic', 'root': None, 'num_workers': 0,
             # synthetic
             'train_size': 240, 'val_size': 24, 'test_size': 40, 'min_seconds': 0.8, 'max_seconds': 1.0,
             'snr_range': [-5.0, 5.0], 'noise_types': list(sedata.NOISE_TYPES),
             # WAV folders (paired: root/<split>/{noisy,clean}; mixture: root/train/{clean,noise} + paired val/test)
             'chunk_length': 8.0, 'is_chunk': True, 'is_variance_norm': True, 'mixture_size': 1000,
             'snrs': [-5, -4, -3, -2, -1, 0], 'val_split': 'val', 'test_split': 'test'},
    'model': {'cin': 2, 'k1': [1, 3], 'k2': [2, 3], 'c': 64, 'kd1': 5, 'cd1': 64, 'd_feat': 256,
              'dilations': [1, 2, 5, 9], 'p': 2, 'fft_num': 320, 'order_num': 3, 'intra_connect': 'cat',
              'inter_connect': 'cat', 'norm_type': 'IN', 'is_causal': True, 'is_u2': True,
              'is_param_share': False, 'is_encoder_share': False, 'in_eps': 1.0, 'in_affine': False},
    'stft': {'win_length': 320, 'hop_length': 160, 'compress': 0.5},
    'loss': {'alpha': 0.5, 'l_type': 'L2'},
    'batch_size': 24, 'epochs': 30, 'lr': 2e-4, 'betas': [0.9, 0.999], 'weight_decay': 1e-7, 'clip_norm': 5.0,
    'early_stop': True, 'eval': {'pesq_stoi': True, 'batch_size': 4},
}


def validate_cfg(cfg, world_size):
    d, m = cfg.data, cfg.model
    if d.name not in ('synthetic', 'paired', 'mixture'):
        raise ConfigError(f"data.name '{d.name}' is not one of synthetic, paired, mixture")
    if d.name != 'synthetic' and not d.root:
        raise ConfigError(f'data.root must name the WAV folder root for data.name={d.name}')
    if not 0 < d.min_seconds <= d.max_seconds:
        raise ConfigError('data.min_seconds/data.max_seconds must satisfy 0 < min <= max')
    if len(d.snr_range) != 2 or d.snr_range[0] > d.snr_range[1]:
        raise ConfigError(f'data.snr_range must be [low, high], got {d.snr_range}')
    bad = [k for k in d.noise_types if k not in sedata.NOISE_TYPES]
    if bad or not d.noise_types:
        raise ConfigError(f'data.noise_types has unknown entries {bad}; valid: {list(sedata.NOISE_TYPES)}')
    if m.norm_type not in NORM_TYPES:
        raise ConfigError(f"model.norm_type '{m.norm_type}' is not one of {', '.join(NORM_TYPES)}")
    for key in ('intra_connect', 'inter_connect'):
        if m[key] not in ('add', 'cat'):
            raise ConfigError(f"model.{key} must be 'add' or 'cat', got '{m[key]}'")
    if m.order_num < 0:
        raise ConfigError(f'model.order_num must be >= 0, got {m.order_num}')
    if m.fft_num != 320 or m.d_feat != 256:
        raise ConfigError('model.fft_num must be 320 and model.d_feat 256 (the frequency path reaches 4 bins x 64 '
                          'channels only from 161 bins)')
    if cfg.stft.hop_length <= 0 or cfg.stft.win_length > m.fft_num:
        raise ConfigError('stft.hop_length must be > 0 and stft.win_length <= model.fft_num')
    if not 0 < cfg.stft.compress <= 1:
        raise ConfigError(f'stft.compress must be in (0, 1], got {cfg.stft.compress}')
    if not 0 <= cfg.loss.alpha <= 1 or cfg.loss.l_type not in ('L1', 'L2'):
        raise ConfigError('loss.alpha must be in [0, 1] and loss.l_type L1 or L2')
    if cfg.batch_size % world_size or cfg.batch_size < world_size:
        raise ConfigError(f'batch_size {cfg.batch_size} must be a positive multiple of the {world_size} processes')
    if cfg.epochs < 1 or cfg.lr <= 0:
        raise ConfigError('epochs must be >= 1 and lr > 0')


def build_datasets(cfg):
    d = cfg.data
    if d.name == 'synthetic':
        def syn(split, size):
            return sedata.SyntheticSpeechNoise(size, d.min_seconds, d.max_seconds, d.snr_range, d.noise_types,
                                               split, cfg.seed, d.is_variance_norm)
        return syn('train', d.train_size), syn('val', d.val_size), syn('test', d.test_size)
    test = sedata.InstanceDataset(d.root, d.test_split, is_chunk=False, is_variance_norm=d.is_variance_norm)
    val = sedata.InstanceDataset(d.root, d.val_split, is_chunk=False, is_variance_norm=d.is_variance_norm) \
        if os.path.isdir(os.path.join(d.root, d.val_split)) else test
    if d.name == 'paired':
        train = sedata.InstanceDataset(d.root, 'train', d.chunk_length, d.is_chunk, d.is_variance_norm,
                                       seed=cfg.seed)
    else:
        train = sedata.MixtureDataset(os.path.join(d.root, 'train', 'clean'), os.path.join(d.root, 'train', 'noise'),
                                      d.snrs, d.mixture_size, d.chunk_length, d.is_chunk, d.is_variance_norm,
                                      seed=cfg.seed)
    return train, val, test


def main(argv=None):
    cfg = parse_cli(DEFAULTS, argv, description='TaylorSENet training')
    validate_cfg(cfg, int(os.environ.get('WORLD_SIZE', 1)))
    run = setup_run(cfg)
    device = run.device
    train_set, val_set, test_set = build_datasets(cfg)
    loader = build_loader(train_set, cfg.batch_size // run.world_size, shuffle=True, drop_last=True,
                          num_workers=cfg.data.num_workers, seed=cfg.seed, collate_fn=sedata.collate)

    def eval_loader(ds):   # every rank scores the whole (small) set, so all ranks agree on the schedule
        return DataLoader(ds, batch_size=cfg.eval.batch_size, shuffle=False, collate_fn=sedata.collate)

    net = TaylorSENet(**cfg.model.to_dict()).to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
    front = STFTFrontEnd(cfg.model.fft_num, cfg.stft.win_length, cfg.stft.hop_length, cfg.stft.compress)
    solver = Solver(net, optimizer, front, ComMagEuclideanLoss(cfg.loss.alpha, cfg.loss.l_type), cfg.clip_norm,
                    device)
    state = run.resume(model=net, optimizer=optimizer, schedule=solver.schedule)
    best = state.get('best_sisnr', -math.inf) if state else -math.inf
    stopped = state.get('stopped', False) if state else False
    run.log(f'TaylorSENet {num_params(net):,} params (order {cfg.model.order_num}, norm {cfg.model.norm_type}); '
            f'{len(train_set)} train / {len(val_set)} val / {len(test_set)} test utterances')
    ddp = wrap_ddp(net, device)
    solver.net = ddp

    for epoch in range(run.start_epoch, cfg.epochs):
        if stopped:
            break
        set_epoch(loader, epoch)
        if hasattr(train_set, 'epoch'):
            train_set.epoch = epoch
        net.train()
        meter, speed = AverageMeter('loss'), Throughput()
        bar = progress(loader, total=len(loader), desc=f'epoch {epoch}')
        for noisy, clean, lengths in bar:
            loss, _ = solver.train_batch(noisy, clean, lengths)
            meter.update(loss, len(lengths))
            speed.update(len(lengths) * run.world_size)
            update_progress(bar, loss=meter.avg, lr=optimizer.param_groups[0]['lr'], utt_s=speed.rate)
        train_loss = all_reduce_mean(torch.tensor(meter.avg, device=device)).item()
        val = solver.validate(unwrap(ddp), eval_loader(val_set))
        is_best = val['sisnr'] > best
        best = max(best, val['sisnr'])
        stopped = cfg.early_stop and solver.end_epoch(val['sisnr'])
        run.log_metrics({'epoch': epoch, 'train_loss': train_loss, 'val_loss': val['loss'], 'val_sisnr': val['sisnr'],
                         'val_si_sdr': val['si_sdr'], 'val_si_sdr_noisy': val['si_sdr_noisy'],
                         'lr': optimizer.param_groups[0]['lr'], 'no_improve': solver.schedule.no_improve,
                         'skipped_steps': solver.skipped_steps, 'utt_per_s': speed.rate})
        run.save({'model': unwrap(ddp).state_dict(), 'optimizer': optimizer.state_dict(),
                  'schedule': solver.schedule.state_dict(), 'epoch': epoch + 1, 'best_sisnr': best,
                  'stopped': stopped, 'config': cfg.to_dict()}, is_best=is_best)
        if stopped:
            run.log(f'early stop after epoch {epoch}: validation SI-SNR did not improve for 3 epochs')

    best_path = os.path.join(run.output_dir, 'best.pth')
    if os.path.exists(best_path):
        load_state_dict(net, load_checkpoint(best_path)['model'])
    extra = cfg.eval.pesq_stoi
    try:
        test = solver.validate(net, eval_loader(test_set), extra_metrics=extra)
    except metrics.OptionalMetricMissing as e:
        run.log(f'PESQ/STOI skipped: {e}')
        test = solver.validate(net, eval_loader(test_set), extra_metrics=False)
    run.log_metrics({'split': 'test', **test})
    lines = [f"SI-SDR (dB): enhanced {test['si_sdr']:.2f} | noisy {test['si_sdr_noisy']:.2f} | "
             f"improvement {test['si_sdr'] - test['si_sdr_noisy']:+.2f}"]
    for k, name in (('pesq_wb', 'WB-PESQ'), ('pesq_nb_raw', 'NB-PESQ (raw P.862)'), ('stoi', 'STOI (%)'),
                    ('estoi', 'ESTOI (%)')):
        if k in test:
            lines.append(f'{name}: enhanced {test[k]:.3f} | noisy {test[k + "_noisy"]:.3f}')
    for line in lines[1:]:
        run.log(line)
    run.finish(f'test set ({cfg.data.name}): ' + lines[0])
    return test


if __name__ == '__main__':
    guard(main)
