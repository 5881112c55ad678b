"""Scoring a width vector: by the trained supernet (top-1 of a placement after BN recalibration) or by the
Channel-Bench-Macro table.

``SupernetEvaluator(widths, placement)``: the top-1 (%) of ``placement`` of ``widths`` on the validation loader
(a held-out split of the training set by default), after re-estimating the BN statistics of that sub-network
on ``recal_batches`` training batches (running stats reset, momentum None = cumulative average, all-reduced
over processes). The searcher takes the best over the width's evaluation placements.
``BenchmarkEvaluator``: the benchmark's mean accuracy of the arch (the oracle evaluator; placement ignored).
"""
import torch
import torch.distributed as dist
import torch.nn as nn

from benchmark import arch_key

__all__ = ['recalibrate_bn', 'accuracy', 'SupernetEvaluator', 'BenchmarkEvaluator']


def _distributed():
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _batches(loader, n):
    """``n`` batches from ``loader``, cycling it when it is shorter."""
    done = 0
    while done < n:
        empty = True
        for batch in loader:
            empty = False
            yield batch
            done += 1
            if done >= n:
                return
        if empty:
            raise ValueError('the BN recalibration loader is empty')


@torch.no_grad()
def recalibrate_bn(model, loader, num_batches, device):
    """Reset every BN's running stats, re-estimate them (cumulative average) on ``num_batches`` batches."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    was_training = model.training
    model.train()
    for x, _ in _batches(loader, num_batches):
        model(x.to(device, non_blocking=True))
    if _distributed():
        for m in bns:
            if m.track_running_stats:
                dist.all_reduce(m.running_mean)
                dist.all_reduce(m.running_var)
                m.running_mean /= dist.get_world_size()
                m.running_var /= dist.get_world_size()
    model.train(was_training)


@torch.no_grad()
def accuracy(model, loader, device, max_batches=None):
    """Top-1 (%) over ``loader`` (summed over processes)."""
    was_training = model.training
    model.eval()
    correct = torch.zeros((), dtype=torch.float64, device=device)
    total = torch.zeros((), dtype=torch.float64, device=device)
    for i, (x, y) in enumerate(loader):
        if max_batches is not None and i >= max_batches:
            break
        out = model(x.to(device, non_blocking=True))
        correct += (out.argmax(1) == y.to(device)).sum()
        total += y.numel()
    if _distributed():
        dist.all_reduce(correct)
        dist.all_reduce(total)
    model.train(was_training)
    return float(100.0 * correct / total.clamp(min=1))


class SupernetEvaluator:
    """score(c, s) = top-1 of placement s of widths c after BN recalibration.

    The BN buffers and momenta of the supernet are snapshot at construction and put back by ``restore()``.
    """

    def __init__(self, supernet, train_loader, val_loader, device, recal_batches=20, max_val_batches=None):
        self.supernet, self.train_loader, self.val_loader = supernet, train_loader, val_loader
        self.device, self.recal_batches, self.max_val_batches = device, recal_batches, max_val_batches
        self._bn_state = {k: v.clone() for k, v in supernet.state_dict().items()
                          if 'running_' in k or 'num_batches_tracked' in k}
        self._momenta = {m: m.momentum for m in supernet.modules() if isinstance(m, nn.BatchNorm2d)}

    def __call__(self, widths, placement=None):
        self.supernet.set_width([int(c) for c in widths], placement)
        recalibrate_bn(self.supernet, self.train_loader, self.recal_batches, self.device)
        return accuracy(self.supernet, self.val_loader, self.device, self.max_val_batches)

    def restore(self):
        """Put back the training-time BN statistics and momenta, and the full width."""
        self.supernet.load_state_dict({**self.supernet.state_dict(), **self._bn_state})
        for m, mom in self._momenta.items():
            m.momentum = mom
        self.supernet.reset()


class BenchmarkEvaluator:
    """score(c) = Channel-Bench-Macro mean accuracy of the arch whose digits are the widths (4 units/slot)."""

    def __init__(self, benchmark):
        self.benchmark = benchmark

    def __call__(self, widths, placement=None):
        return self.benchmark.mean(arch_key(widths))
