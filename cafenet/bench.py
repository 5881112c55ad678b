"""Speed figures (printed, never asserted): ``python bench.py``.

* one min-min training step (K = 2 scoring passes + the winner's forward/backward) vs one single-placement
  step, Channel-Bench-Macro MobileNet x0.25 at 32x32, batch 64;
* forward of a contiguous vs a non-contiguous (gathered) placement of the same width;
* analytic FLOPs of a width vector (what the searcher calls per candidate); one benchmark-oracle search.
"""
import os
import time

import torch

from evaluator import BenchmarkEvaluator
from models.cbm import build_cbm
from sampler import CafeNetSampler
from searcher import CafeNetSearcher
from supernet import CafeSupernet
from tables import data_path, default_data_dir, load_bench
from trainer import CafeNetTrainer


def timed(fn, n):
    fn()
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t) / n


def main():
    torch.manual_seed(0)
    sn = CafeSupernet(build_cbm('mobilenet', width_mult=0.25), [8, 48, 48, 48, 16, 96, 64], 1, (3, 32, 32))
    x, y = torch.randn(64, 3, 32, 32), torch.randint(0, 10, (64,))
    w = [2, 3, 2, 3, 2, 3, 2]
    for k in (1, 2, 4):
        tr = CafeNetTrainer(k, CafeNetSampler(sn.num_units, 1, rng=0))
        pls = tr.sampler.sample_placements(w, k)
        t = timed(lambda: tr.forward(sn, x, y, widths=w, placements=pls), 5)
        print(f'training step with K = {k} placements ({len(pls)} distinct): {t * 1e3:7.1f} ms')
    sn.eval()
    with torch.no_grad():
        sn.set_width(w, None)
        tc = timed(lambda: sn(x), 10)
        sn.set_width(w, ((0, 2), (0, 1, 3), (0, 2), (0, 1, 3), (0, 2), (0, 1, 3), (0, 2)))
        tg = timed(lambda: sn(x), 10)
    print(f'eval forward, contiguous placement {tc * 1e3:.1f} ms, gathered (non-contiguous) {tg * 1e3:.1f} ms')
    full = CafeSupernet(build_cbm('mobilenet'), [32, 192, 192, 192, 64, 384, 256], 1)
    print(f'analytic FLOPs of one width vector: {timed(lambda: full.flops(w), 1000) * 1e6:.1f} us')
    if os.path.isfile(data_path(default_data_dir(), 'mobilenet')):
        bench = load_bench(default_data_dir(), 'mobilenet')
        t = time.perf_counter()
        CafeNetSearcher(max_epoch=40, flops_limit=100e6, seed=0).search(full.num_units, BenchmarkEvaluator(bench),
                                                                         full.flops)
        print(f'benchmark-oracle search, 40 generations x 50: {time.perf_counter() - t:.2f} s')


if __name__ == '__main__':
    main()
