"""Evaluators: supernet loss without touching BN statistics, BN recalibration, benchmark pseudo-loss."""
import random

import pytest
import torch

from evaluators import BenchmarkEvaluator, SupernetEvaluator
from models.nas_bench_macro import MacroSupernet


def _loaders(n=24, bs=8):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(n, 3, 16, 16, generator=g), torch.randint(0, 10, (n,), generator=g)
    ds = torch.utils.data.TensorDataset(x, y)
    return torch.utils.data.DataLoader(ds, batch_size=bs), torch.utils.data.DataLoader(ds, batch_size=bs)


def test_eval_loss_leaves_running_stats_and_caches_batch():
    torch.manual_seed(0)
    model = MacroSupernet(init_channels=4)
    train, val = _loaders()
    ev = SupernetEvaluator(train, val, bn_batches=2, update_data_freq=2)
    before = [b.clone() for n, b in model.named_buffers() if 'running' in n]
    l1 = ev.eval_loss(model, [1] * 8)
    l2 = ev.eval_loss(model, [1] * 8)
    after = [b for n, b in model.named_buffers() if 'running' in n]
    assert all(torch.equal(a, b) for a, b in zip(before, after))
    assert l1 == pytest.approx(l2)  # the same cached batch
    first = ev._batch[0]
    ev.eval_loss(model, [1] * 8)  # the third evaluation draws a new batch
    assert not torch.equal(first, ev._batch[0])
    run = SupernetEvaluator(train, val, loss_bn='running')
    assert run.eval_loss(model, [2] * 8) > 0
    with pytest.raises(ValueError):
        SupernetEvaluator(train, val, loss_bn='none')


def test_recalibration_is_a_cumulative_average():
    torch.manual_seed(0)
    model = MacroSupernet(init_channels=4)
    train, val = _loaders()
    ev = SupernetEvaluator(train, val, bn_batches=2)
    model.set_subnet([0] * 8)
    bn = model.stem[1]
    inputs = []
    h = model.stem[0].register_forward_hook(lambda m, i, o: inputs.append(o.detach()))
    ev.recalibrate_bn(model)
    h.remove()
    expected = torch.stack([x.mean((0, 2, 3)) for x in inputs]).mean(0)
    assert torch.allclose(bn.running_mean, expected, atol=1e-5)
    assert bn.momentum == 0.1  # restored
    acc = ev.eval_acc(model, [0] * 8)
    assert 0.0 <= acc <= 100.0


def test_benchmark_evaluator(bench):
    ev = BenchmarkEvaluator(bench)
    assert ev.eval_loss(None, [2, 2, 2, 1, 2, 2, 2, 0]) == pytest.approx((100 - 93.127) / 10, abs=1e-3)
    assert ev.eval_acc(None, '00000000') == pytest.approx(45.36, abs=0.01)
    assert len(ev.queried) == 2
    noisy = BenchmarkEvaluator(bench, noise=0.1, rng=random.Random(0))
    vals = {noisy.eval_loss(None, '11111111') for _ in range(5)}
    assert len(vals) == 5
