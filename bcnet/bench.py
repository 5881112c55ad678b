"""Speed figures (printed, never asserted): ``python bench.py``.

* one BC training step (left + right pass, sequential backward) vs one single-path step, CBM MobileNet;
* analytic FLOPs of a width vector (what the searcher calls for every candidate);
* fitting the prior (2000 SGD steps) and one benchmark-evaluator search (50 x 4 generations).
"""
import time

import torch

from algorithm import BCNetAlgorithm
from benchmark import ChannelBenchMacro
from evaluator import BenchmarkEvaluator, benchmark_loss_records
from models.cbm import build_cbm
from sampler import BCNetSampler
from searcher import BCNetSearcher, prior_probs
from supernet import BCNetSupernet
from tables import data_path, default_data_dir
from trainer import BCNetTrainer


def timed(fn, n):
    fn()
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t) / n


def main():
    torch.manual_seed(0)
    sn = BCNetSupernet(build_cbm('mobilenet', width_mult=0.25), 4, 1, (3, 32, 32))
    alg = BCNetAlgorithm(BCNetSampler(4, 1, rng=0), BCNetSearcher(4, 1, prior_init=False), 4, 1)
    bc, ua = BCNetTrainer('supernet', alg), BCNetTrainer('supernet', alg, bilateral=False)
    x, y = torch.randn(64, 3, 32, 32), torch.randint(0, 10, (64,))
    print(f'CBM MobileNet x0.25, batch 64, {torch.get_num_threads()} threads:')
    print(f'  BC step (two paths)     {1e3 * timed(lambda: bc.forward(sn, x, y), 5):8.1f} ms')
    print(f'  single-path step        {1e3 * timed(lambda: ua.forward(sn, x, y), 5):8.1f} ms')
    full = BCNetSupernet(build_cbm('mobilenet'), 4, 1, (3, 32, 32))
    us = 1e6 * timed(lambda: full.flops([1, 2, 3, 4, 1, 2, 3]), 2000)
    print(f'  analytic FLOPs of a width vector   {us:8.1f} us')
    E = torch.rand(7, 4)
    print(f'  prior fit (2000 SGD steps)         {1e3 * timed(lambda: prior_probs(E, [1e7] * 7, 1e8, 4), 3):8.1f} ms')
    path = data_path(default_data_dir(), 'mobilenet')
    try:
        bench = ChannelBenchMacro(path, 'mobilenet')
    except FileNotFoundError:
        print(f'  (benchmark search skipped: {path} not found)')
        return
    recs = benchmark_loss_records(bench, BCNetSampler(4, 1, rng=0), 11760, 100, rng=0)
    ev = BenchmarkEvaluator(bench)

    def search():
        s = BCNetSearcher(4, 1, prior_init=True, max_epoch=4, flops_limit=100e6, seed=0)
        s.search(full.get_channel_choices(), ev, full.flops, full.get_layer_flops(), recs)
    print(f'  benchmark search, prior, 4 gens    {1e3 * timed(search, 2):8.1f} ms')


if __name__ == '__main__':
    main()
