"""Losses of the official release, on compressed spectra (B, 2, T, F) with a valid-frame list. Imports only torch."""
import torch
from torch import Tensor


def frame_mask(frame_list, shape, device, dtype) -> Tensor:
    """(B, 1, T, 1) mask: 1 for frames t < T_b of utterance b."""
    b, _, t, _ = shape
    idx = torch.arange(t, device=device).view(1, t)
    lens = torch.as_tensor(list(frame_list), device=device).view(b, 1)
    return (idx < lens).to(dtype).view(b, 1, t, 1)


def _err(diff: Tensor, l_type: str) -> Tensor:
    if l_type == 'L2':
        return diff.pow(2)
    if l_type == 'L1':
        return diff.abs()
    raise ValueError(f'l_type must be "L1" or "L2", got {l_type!r}')


class MagnitudeLoss:
    """Masked mean error between |est| and |label| over valid T x F entries."""

    def __init__(self, l_type='L2'):
        _err(torch.zeros(1), l_type)
        self.l_type = l_type

    def __call__(self, est: Tensor, label: Tensor, frame_list) -> Tensor:
        mask = frame_mask(frame_list, est.shape, est.device, est.dtype)[:, 0]
        n_valid = mask.sum() * est.shape[-1]
        diff = torch.norm(est, dim=1) - torch.norm(label, dim=1)
        return (_err(diff, self.l_type) * mask).sum() / n_valid


class ComMagEuclideanLoss:
    """L = alpha * L_RI + (1 - alpha) * L_Mag; L_RI averages over the 2 T_b F valid real/imag entries, L_Mag over
    the T_b F valid magnitude entries (zero-padded frames excluded from sums and counts)."""

    def __init__(self, alpha=0.5, l_type='L2'):
        if not 0 <= alpha <= 1:
            raise ValueError(f'alpha must be in [0, 1], got {alpha}')
        _err(torch.zeros(1), l_type)
        self.alpha, self.l_type = alpha, l_type
        self.mag = MagnitudeLoss(l_type)

    def __call__(self, est: Tensor, label: Tensor, frame_list) -> Tensor:
        mask = frame_mask(frame_list, est.shape, est.device, est.dtype)
        n_valid = mask.sum() * est.shape[-1]
        loss_ri = (_err(est - label, self.l_type) * mask).sum() / (2 * n_valid)
        return self.alpha * loss_ri + (1 - self.alpha) * self.mag(est, label, frame_list)


class StagewiseComMagEuclideanLoss:
    """prev_weight * sum of ComMag losses of the intermediate estimates + curr_weight * loss of the last one."""

    def __init__(self, prev_weight, curr_weight, alpha=0.5, l_type='L2'):
        self.prev_weight, self.curr_weight = prev_weight, curr_weight
        self.loss = ComMagEuclideanLoss(alpha, l_type)

    def __call__(self, est_list, label: Tensor, frame_list) -> Tensor:
        prev = sum((self.loss(e, label, frame_list) for e in est_list[:-1]), torch.zeros((), device=label.device))
        return self.prev_weight * prev + self.curr_weight * self.loss(est_list[-1], label, frame_list)
