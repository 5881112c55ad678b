"""Scoring a width vector: by the trained supernet (two-path top-1 after BN recalibration) or by the benchmark.

``SupernetEvaluator``: BCNet's score of width c is 1/2 (top-1 of the left path + top-1 of the right path),
each measured after recalibrating the BN statistics of that path on ``recal_batches`` training batches
(running stats reset, momentum=None for a cumulative average, all-reduced over processes).
``BenchmarkEvaluator``: the Channel-Bench-Macro mean accuracy of the arch (the "oracle" evaluator).
"""
import heapq

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn

from benchmark import arch_key

__all__ = ['recalibrate_bn', 'accuracy', 'SupernetEvaluator', 'BenchmarkEvaluator', 'benchmark_loss_records']


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
    """score(c) = (top1(left path of c) + top1(right path of c)) / 2, each after BN recalibration.

    ``bilateral=False`` scores the left path only (the unilateral, AutoSlim-style baseline). The BN buffers
    of the supernet are snapshot at construction and restored by ``restore()``.
    """

    def __init__(self, supernet, train_loader, val_loader, device, recal_batches=20, max_val_batches=None,
                 bilateral=True):
        self.supernet, self.train_loader, self.val_loader = supernet, train_loader, val_loader
        self.device, self.recal_batches, self.max_val_batches = device, recal_batches, max_val_batches
        self.bilateral = bilateral
        self._bn_state = {k: v.clone() for k, v in supernet.state_dict().items()
                          if 'running_' in k or 'num_batches_tracked' in k}
        self._momenta = {m: m.momentum for m in supernet.modules() if isinstance(m, nn.BatchNorm2d)}

    def path_score(self, choices):
        self.supernet.set_channel_choices(choices)
        recalibrate_bn(self.supernet, self.train_loader, self.recal_batches, self.device)
        return accuracy(self.supernet, self.val_loader, self.device, self.max_val_batches)

    def __call__(self, widths):
        B = self.supernet.channel_bins
        left = self.path_score([[0, int(c)] for c in widths])
        if not self.bilateral:
            return left
        right = self.path_score([[B - int(c), B] for c in widths])
        return 0.5 * (left + right)

    def restore(self):
        """Put back the training-time BN statistics and momenta, and the full width."""
        self.supernet.load_state_dict({**self.supernet.state_dict(), **self._bn_state})
        for m, mom in self._momenta.items():
            m.momentum = mom
        self.supernet.reset()


class BenchmarkEvaluator:
    """score(c) = Channel-Bench-Macro mean accuracy of the arch whose digits are the widths (B = 4, m = 1)."""

    def __init__(self, benchmark):
        self.benchmark = benchmark

    def __call__(self, widths):
        return self.benchmark.mean(arch_key(widths))


def benchmark_loss_records(benchmark, sampler, steps, rec_num=100, rng=None):
    """The 100 lowest-loss records of a simulated supernet training run on the benchmark.

    For each of ``steps`` iterations the ``sampler`` gives (subnet_left, subnet_right) exactly as in training
    (complementary pairs included); the record's loss is the test error (1 - acc/100) of one of the 3
    benchmark runs of that width vector, picked at random. Used as the prior's records when the benchmark is
    the evaluator and no supernet is trained (an assumption of this implementation, see the README).
    """
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    choices = [[sampler.min_channel_bins, sampler.channel_bins]] * 7
    heap = []   # max-heap on loss via negation: keeps the rec_num lowest
    for t in range(steps):
        left, right = sampler.gen_subnet(choices)
        runs = benchmark.query([hi - lo for lo, hi in left])['acc']
        loss = 1.0 - runs[int(rng.integers(len(runs)))] / 100.0
        item = (-loss, t, (left, right))
        if len(heap) < rec_num:
            heapq.heappush(heap, item)
        elif -loss > heap[0][0]:
            heapq.heapreplace(heap, item)
    return [(-neg, pair) for neg, _, pair in heap]
