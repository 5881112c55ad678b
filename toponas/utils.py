"""Small helpers of the DARTS code (``quark0/darts/cnn/utils.py`` names)."""
import numpy as np
import torch


class AvgrageMeter:
    """Running average (the DARTS spelling is kept)."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.avg, self.sum, self.cnt = 0.0, 0.0, 0

    def update(self, val, n=1):
        self.sum += val * n
        self.cnt += n
        self.avg = self.sum / self.cnt


def accuracy(output, target, topk=(1,)):
    """Top-k accuracies in percent."""
    maxk = min(max(topk), output.shape[1])
    pred = output.topk(maxk, 1, True, True).indices.t()
    correct = pred.eq(target.view(1, -1).expand_as(pred))
    return [correct[:min(k, maxk)].reshape(-1).float().sum().mul_(100.0 / target.shape[0]) for k in topk]


class Cutout:
    """Zero one ``length`` x ``length`` square (centre uniform over the image, clipped at the borders) of a CHW
    tensor; applied after normalisation, as in DARTS."""

    def __init__(self, length, generator=None):
        self.length = length
        self.rng = generator if generator is not None else np.random

    def __call__(self, img):
        h, w = img.shape[1], img.shape[2]
        mask = np.ones((h, w), np.float32)
        y, x = self.rng.randint(h), self.rng.randint(w)
        y1, y2 = np.clip(y - self.length // 2, 0, h), np.clip(y + self.length // 2, 0, h)
        x1, x2 = np.clip(x - self.length // 2, 0, w), np.clip(x + self.length // 2, 0, w)
        mask[y1:y2, x1:x2] = 0.0
        return img * torch.from_numpy(mask).expand_as(img)


def count_parameters_in_MB(model):
    """Parameters in millions, without the auxiliary head (as DARTS reports them)."""
    return sum(np.prod(v.size()) for name, v in model.named_parameters() if 'auxiliary' not in name) / 1e6


def count_parameters(model):
    """Exact parameter count without the auxiliary head."""
    return int(sum(v.numel() for name, v in model.named_parameters() if 'auxiliary' not in name))


def drop_path(x, drop_prob):
    """Zero whole samples with probability ``drop_prob`` and rescale the kept ones by 1 / (1 - drop_prob)."""
    if drop_prob > 0.:
        keep_prob = 1. - drop_prob
        mask = torch.empty(x.shape[0], 1, 1, 1, dtype=x.dtype, device=x.device).bernoulli_(keep_prob)
        x = x.div(keep_prob) * mask
    return x
