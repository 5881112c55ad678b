"""Speed figures (run by ``make bench``): tree operations, the oracle search, and supernet steps on CPU."""
import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from flops import SubnetCost  # noqa: E402
from models.nas_bench_macro import MacroSupernet  # noqa: E402
from sampler import MCTSampler  # noqa: E402
from searcher import MCTSearcher  # noqa: E402


def loss_of(a):  # a smooth synthetic loss landscape over the 3^8 space
    return 1.0 + 0.05 * sum((x - 2) ** 2 for x in a) + 0.01 * a[3]


def main():
    torch.set_num_threads(max(1, int(os.environ.get('OMP_NUM_THREADS', 1))))
    choices = [3] * 8
    s = MCTSampler(warmup_iters=0, mct_start_iter=2000, beta=0.96, gamma=0.96, C1=0.1, C2=0.2, tau=0.0025,
                   rng=random.Random(0))
    t = time.perf_counter()
    for _ in range(2000):
        a = s.gen_subnet(choices)
        s.update_reward(a, loss_of(a))
    t_build = time.perf_counter() - t
    t = time.perf_counter()
    for _ in range(5000):
        a = s.gen_subnet(choices)
        s.update_reward(a, loss_of(a))
    t_tree = time.perf_counter() - t
    print(f'tree building (uniform draw + update): {2000 / t_build:,.0f} it/s')
    print(f'tree sampling (UCT softmax draw + update): {5000 / t_tree:,.0f} it/s; tree holds {s.tree.size} leaves')
    searcher = MCTSearcher(n_thrd=6, tau=0.0025, search_num=20, C2=0.2)
    t = time.perf_counter()
    searcher.search(None, lambda m, a: loss_of(a), lambda m, a: -loss_of(a), tree=s.tree, tilde_L=s.tilde_L)
    print(f'hierarchical search of 20 paths: {time.perf_counter() - t:.3f}s, {searcher.n_loss_evals} re-evaluations')

    t = time.perf_counter()
    SubnetCost(MacroSupernet(), (1, 3, 32, 32))
    print(f'SubnetCost of the NAS-Bench-Macro supernet (all 24 ops): {time.perf_counter() - t:.2f}s')
    for width, size, bs in ((8, 16, 32), (32, 32, 32)):
        model = MacroSupernet(init_channels=width)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        x, y = torch.randn(bs, 3, size, size), torch.randint(0, 10, (bs,))
        rng = random.Random(0)
        times = []
        for i in range(4):
            model.set_subnet([rng.randrange(3) for _ in range(8)])
            t = time.perf_counter()
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if i:
                times.append(time.perf_counter() - t)
        step = sum(times) / len(times)
        print(f'supernet step, width {width}, {size}x{size}, batch {bs}: {step * 1000:.0f} ms '
              f'({bs / step:.0f} img/s)')


if __name__ == '__main__':
    main()
