"""Speed figures (``make bench``; never a test): time of one supernet step and one simplex-net step against K.

K-shot combines the copies first and runs one forward per path, so the cost grows only with the weight
combination (K x the parameters of the path), not with K forwards.
"""
import argparse
import time

import torch

from simplex import SimplexNet
from supernet import KShotSuperNet
from train import KShotTrainer

SMALL = dict(stages=[(16, 2, 1), (24, 2, 2), (32, 2, 2)], stem_channels=8, first_channels=8, last_channels=64,
             stem_stride=1)


def time_steps(K, phase, iters, batch, size):
    torch.manual_seed(0)
    net = KShotSuperNet(K=K, num_classes=10, **SMALL)
    simplex = SimplexNet(net.num_layers, net.space.num_ops, K)
    tr = KShotTrainer(net, simplex, total_iters=10 ** 6, warmup_iters=0, num_paths=4, seed=0)
    x, y = torch.randn(batch, 3, size, size), torch.randint(0, 10, (batch,))
    step = tr.supernet_step if phase == 'supernet' else tr.simplex_step
    step(x, y)  # warm-up
    t0 = time.perf_counter()
    for _ in range(iters):
        step(x, y)
    return (time.perf_counter() - t0) / iters * 1000


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--iters', type=int, default=10)
    parser.add_argument('--batch', type=int, default=32)
    parser.add_argument('--size', type=int, default=16)
    args = parser.parse_args()
    print(f'ms per step on {torch.get_num_threads()} threads (the cfg.yaml space, batch {args.batch}, '
          f'{args.size}x{args.size}):')
    for K in (1, 3, 8):
        sup = time_steps(K, 'supernet', args.iters, args.batch, args.size)
        smp = f'{time_steps(K, "simplex", args.iters, args.batch, args.size):7.1f} ms' if K > 1 else 'none (K = 1)'
        print(f'  K = {K}: supernet step {sup:7.1f} ms, simplex-net step (4 paths) {smp}')


if __name__ == '__main__':
    main()
