"""Helpers of quark0/darts ``utils.py``: drop-path, Cutout, parameter counting, accuracy, running average."""
import torch


class AvgrageMeter:  # (sic) the DARTS name
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
    _, pred = output.topk(maxk, 1, True, True)
    correct = pred.t().eq(target.view(1, -1).expand_as(pred.t()))
    return [correct[:min(k, maxk)].reshape(-1).float().sum(0) * (100.0 / target.shape[0]) for k in topk]


class Cutout:
    """Zero one length x length square (centre uniform over the image, clipped at the border) of a CHW tensor."""

    def __init__(self, length, generator=None):
        self.length = length
        self.generator = generator

    def __call__(self, img):
        h, w = img.shape[1], img.shape[2]
        y = int(torch.randint(h, (1,), generator=self.generator))
        x = int(torch.randint(w, (1,), generator=self.generator))
        y1, y2 = max(y - self.length // 2, 0), min(y + self.length // 2, h)
        x1, x2 = max(x - self.length // 2, 0), min(x + self.length // 2, w)
        mask = torch.ones(h, w, dtype=img.dtype)
        mask[y1:y2, x1:x2] = 0.0
        return img * mask


def count_parameters(model):
    """Parameters of ``model`` excluding the auxiliary head (the convention of every DARTS table)."""
    return sum(p.numel() for name, p in model.named_parameters() if 'auxiliary' not in name)


def count_parameters_in_MB(model):
    return count_parameters(model) / 1e6


def drop_path(x, drop_prob):
    """Drop whole samples of an op output with probability drop_prob, rescaling the kept ones by 1/(1-p)."""
    if drop_prob > 0.0:
        keep_prob = 1.0 - drop_prob
        mask = torch.empty(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype).bernoulli_(keep_prob)
        x = x / keep_prob * mask
    return x


def _data_transforms_cifar10(cutout=False, cutout_length=16):
    """DARTS CIFAR-10 train / valid transforms (random crop 32 pad 4, flip, normalise, optional cutout)."""
    import torchvision.transforms as T
    mean = [0.49139968, 0.48215827, 0.44653124]
    std = [0.24703233, 0.24348505, 0.26158768]
    train = [T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(mean, std)]
    if cutout:
        train.append(Cutout(cutout_length))
    return T.Compose(train), T.Compose([T.ToTensor(), T.Normalize(mean, std)])
