"""Two evaluators behind one interface, used by ``MCTSearcher``.

``eval_loss(model, subnet) -> float``: the cheap signal of the hierarchical re-evaluation (tree reward
tilde_L / loss). ``eval_acc(model, subnet) -> float``: the score of a proposed path (top-1, %).

* ``SupernetEvaluator``: loss of the path on one cached validation batch (a new batch every
  ``update_data_freq`` evaluations, no BN recalibration); accuracy after recalibrating BN on ``bn_batches``
  training batches (running stats reset, cumulative average) on the held-out validation set.
* ``BenchmarkEvaluator``: a NAS-Bench-Macro lookup, for studying the search algorithm itself. Its loss is
  the oracle pseudo-loss (100 - mean_acc) / 10 + N(0, noise).
"""
import random

import torch
import torch.nn as nn
import torch.nn.functional as F


class BenchmarkEvaluator:
    def __init__(self, bench, noise=0.0, rng=None):
        self.bench, self.noise = bench, noise
        self.rng = rng if rng is not None else random.Random(0)
        self.queried = set()  # distinct architectures whose table entry was read

    def pseudo_loss(self, subnet):
        loss = (100.0 - self.bench.acc(subnet)) / 10.0
        if self.noise > 0:
            loss += self.rng.gauss(0.0, self.noise)
        return max(loss, 1e-3)

    def eval_loss(self, model, subnet):
        self.queried.add(tuple(subnet))
        return self.pseudo_loss(subnet)

    def eval_acc(self, model, subnet):
        self.queried.add(tuple(subnet))
        return self.bench.acc(subnet)


def _cycle(loader):
    while True:
        yielded = False
        for batch in loader:
            yielded = True
            yield batch
        if not yielded:
            raise ValueError('the evaluation loader is empty')


class SupernetEvaluator:
    """``loss_bn``: 'batch' evaluates the loss with batch statistics (running stats untouched), 'running' with
    the supernet's running statistics (``model.eval()``); neither recalibrates BN."""

    def __init__(self, train_loader, val_loader, device='cpu', bn_batches=20, update_data_freq=1000,
                 loss_bn='batch'):
        if loss_bn not in ('batch', 'running'):
            raise ValueError(f"loss_bn must be 'batch' or 'running', got {loss_bn!r}")
        self.train_loader, self.val_loader = train_loader, val_loader
        self.device, self.bn_batches, self.update_data_freq = device, bn_batches, update_data_freq
        self.loss_bn = loss_bn
        self._val_iter = None
        self._batch = None
        self.n_loss = 0

    def _loss_batch(self):
        if self._batch is None or (self.n_loss > 0 and self.n_loss % self.update_data_freq == 0):
            if self._val_iter is None:
                self._val_iter = _cycle(self.val_loader)
            x, y = next(self._val_iter)
            self._batch = (x.to(self.device), y.to(self.device))
        return self._batch

    @torch.no_grad()
    def eval_loss(self, model, subnet):
        x, y = self._loss_batch()
        self.n_loss += 1
        model.set_subnet(subnet)
        bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        was_training = model.training
        if self.loss_bn == 'batch':
            model.train()
            saved = [(m.track_running_stats, m.running_mean, m.running_var) for m in bns]
            for m in bns:  # batch statistics, running buffers left alone
                m.track_running_stats, m.running_mean, m.running_var = False, None, None
            try:
                loss = F.cross_entropy(model(x), y).item()
            finally:
                for m, (t, rm, rv) in zip(bns, saved):
                    m.track_running_stats, m.running_mean, m.running_var = t, rm, rv
        else:
            model.eval()
            loss = F.cross_entropy(model(x), y).item()
        model.train(was_training)
        return loss

    @torch.no_grad()
    def recalibrate_bn(self, model):
        bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        momenta = [m.momentum for m in bns]
        for m in bns:
            m.reset_running_stats()
            m.momentum = None  # cumulative moving average
        model.train()
        try:
            for i, (x, _) in enumerate(self.train_loader):
                if i >= self.bn_batches:
                    break
                model(x.to(self.device))
        finally:
            for m, mom in zip(bns, momenta):
                m.momentum = mom

    @torch.no_grad()
    def eval_acc(self, model, subnet):
        model.set_subnet(subnet)
        was_training = model.training
        if self.bn_batches > 0:
            self.recalibrate_bn(model)
        model.eval()
        correct = total = 0
        for x, y in self.val_loader:
            pred = model(x.to(self.device)).argmax(1)
            correct += (pred == y.to(self.device)).sum().item()
            total += y.numel()
        model.train(was_training)
        return 100.0 * correct / max(total, 1)
