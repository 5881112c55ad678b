"""Speed figures (``make bench``; never a test): one search step (architecture step + weight step) of the
DARTS and TopoNAS super-nets, first and second order, and the topology computation alone."""
import time

import torch
import torch.nn as nn

from architect import Architect
from model_search import Network
from topology import PassiveAggressiveReg, cell_distributions

ARGS = {'momentum': 0.9, 'weight_decay': 3e-4, 'arch_learning_rate': 3e-4, 'arch_weight_decay': 1e-3}


def search_step_time(repeats=2, unrolled=False, **kw):
    torch.manual_seed(0)
    net = Network(8, 10, 5, nn.CrossEntropyLoss(), **kw)
    opt = torch.optim.SGD(net.weights(), 0.025, momentum=0.9)
    arch = Architect(net, ARGS, PassiveAggressiveReg(k=kw.get('topo_k', 2)))
    x, y = torch.randn(32, 3, 16, 16), torch.randint(0, 10, (32,))
    t0 = time.process_time()
    for _ in range(repeats):
        arch.step(x, y, x, y, 0.025, opt, unrolled)
        opt.zero_grad()
        net._loss(x, y).backward()
        opt.step()
    return (time.process_time() - t0) / repeats


def main():
    print(f'torch {torch.__version__}, {torch.get_num_threads()} threads; CPU seconds per search step '
          f'(5 cells, C=8, batch 32, 16x16):')
    for label, kw in (('DARTS', dict(topo_param='none')), ('TopoNAS edge k=2', dict()),
                      ('TopoNAS free in-degree', dict(topo_k=0)), ('TopoNAS on PC-DARTS', dict(base='pcdarts'))):
        print(f'  {label:<24} first order {search_step_time(**kw):.2f} s')
    print(f'  {"TopoNAS edge k=2":<24} second order {search_step_time(repeats=1, unrolled=True):.2f} s')
    beta = torch.randn(14, requires_grad=True)
    t0 = time.process_time()
    for _ in range(100):
        cell_distributions(beta)
    print(f'topology distribution + marginals of one cell type: {(time.process_time() - t0) * 10:.2f} ms')


if __name__ == '__main__':
    main()
