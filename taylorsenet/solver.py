"""Training and validation of TaylorSENet as in the official ``Solver`` (no ``common`` import).

One step: STFT -> compress -> net -> ComMag loss over valid frames -> backward -> clip global norm -> skip the
update when any gradient is NaN/Inf. Validation: decompress, iSTFT(length), SI-SNR over valid samples.
LR halving / early stop compare each epoch's validation SI-SNR with the PREVIOUS epoch's (``PlateauHalving``).
"""
import math

import torch

import metrics
from losses import ComMagEuclideanLoss
from stft import STFTFrontEnd


class PlateauHalving:
    """Not better than the previous epoch: ``no_improve += 1``; halve the LR once at 2 misses, stop at 3.
    Any improvement resets the counter."""

    def __init__(self, halve_at=2, stop_at=3):
        self.halve_at, self.stop_at = halve_at, stop_at
        self.prev, self.no_improve = None, 0

    def step(self, value, optimizer):
        """Returns True when training must stop."""
        if self.prev is not None and value <= self.prev:
            self.no_improve += 1
            if self.no_improve == self.halve_at:
                for g in optimizer.param_groups:
                    g['lr'] = g['lr'] / 2
        else:
            self.no_improve = 0
        self.prev = value
        return self.no_improve >= self.stop_at

    def state_dict(self):
        return {'prev': self.prev, 'no_improve': self.no_improve}

    def load_state_dict(self, state):
        self.prev, self.no_improve = state['prev'], state['no_improve']


def grads_finite(params) -> bool:
    return all(torch.isfinite(p.grad).all() for p in params if p.grad is not None)


class Solver:
    """Holds the front end, loss, clip value and schedule; ``train_batch`` / ``validate`` / ``end_epoch``."""

    def __init__(self, net, optimizer, front=None, loss=None, clip_norm=5.0, device='cpu'):
        self.net, self.optimizer = net, optimizer
        self.front = front or STFTFrontEnd()
        self.loss = loss or ComMagEuclideanLoss(0.5, 'L2')
        self.clip_norm, self.device = clip_norm, torch.device(device)
        self.schedule = PlateauHalving()
        self.skipped_steps = 0

    def train_batch(self, noisy, clean, lengths):
        """One optimisation step; returns (loss value, whether the update was applied)."""
        noisy, clean = noisy.to(self.device), clean.to(self.device)
        x, target = self.front.encode(noisy), self.front.encode(clean)
        est = self.net(x)
        loss = self.loss(est, target, self.front.frame_count(lengths.tolist()))
        self.optimizer.zero_grad()
        loss.backward()
        params = [p for p in self.net.parameters() if p.requires_grad]
        if self.clip_norm:
            torch.nn.utils.clip_grad_norm_(params, self.clip_norm)
        if not grads_finite(params):
            self.skipped_steps += 1
            return loss.item(), False
        self.optimizer.step()
        return loss.item(), True

    @torch.no_grad()
    def enhance(self, net, noisy, lengths=None):
        """Batch of (variance-normalised) waveforms -> enhanced waveforms (same scale), padded samples zeroed."""
        noisy = noisy.to(self.device)
        out = self.front.decode(net(self.front.encode(noisy)), noisy.shape[-1])
        if lengths is not None:
            mask = torch.arange(noisy.shape[-1], device=noisy.device)[None] < lengths.to(noisy.device)[:, None]
            out = out * mask
        return out

    @torch.no_grad()
    def validate(self, net, loader, extra_metrics=False):
        """Mean loss, SI-SNR (official), SI-SDR of enhanced and noisy over valid samples; PESQ/STOI if asked and
        installed (``metrics.OptionalMetricMissing`` propagates when not)."""
        was_training = net.training
        net.eval()
        sums, n = {}, 0

        def add(k, v):
            sums[k] = sums.get(k, 0.0) + v

        for noisy, clean, lengths in loader:
            noisy_d, clean_d = noisy.to(self.device), clean.to(self.device)
            est_spec = net(self.front.encode(noisy_d))
            add('loss', self.loss(est_spec, self.front.encode(clean_d), self.front.frame_count(lengths.tolist()))
                .item() * len(lengths))
            est = self.front.decode(est_spec, noisy.shape[-1]).cpu()
            for i, L in enumerate(lengths.tolist()):
                e, s, y = est[i, :L], clean[i, :L], noisy[i, :L]
                add('sisnr', metrics.sisnr(e, s))
                add('si_sdr', metrics.si_sdr(e, s))
                add('si_sdr_noisy', metrics.si_sdr(y, s))
                if extra_metrics:
                    for name, fn in (('pesq_wb', metrics.pesq_wb), ('pesq_nb_raw', metrics.pesq_nb)):
                        add(name, fn(s, e))
                        add(name + '_noisy', fn(s, y))
                    for name, ext in (('stoi', False), ('estoi', True)):
                        add(name, metrics.stoi(s, e, extended=ext))
                        add(name + '_noisy', metrics.stoi(s, y, extended=ext))
            n += len(lengths)
        net.train(was_training)
        return {k: v / max(n, 1) for k, v in sums.items()}

    def end_epoch(self, val_metric):
        """Apply the halving / early-stop rule; True means stop."""
        if math.isnan(val_metric):
            val_metric = -math.inf
        return self.schedule.step(val_metric, self.optimizer)
