"""Throughput of one ReSSL training step (student + EMA + teacher + loss + SGD): ``python bench.py``.

Prints images per second for the embedded default (ResNet-18 width 16 at 32 px) and, with ``--full``, the
small-dataset recipe (ResNet-18 width 64 at 32 px).  Timings depend on the machine and its load.
"""
import argparse
import time

import torch

import losses
import models


def bench(width, size, batch, K, hidden_dim, dim, bn_splits, steps, device):
    torch.manual_seed(0)
    net = models.resnet18(small_input=True, bn_splits=bn_splits, width=width)
    model = models.ReSSL(net, dim=dim, K=K, m=0.99, hidden_dim=hidden_dim).to(device).train()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9)
    strong = torch.randn(batch, 3, size, size, device=device)
    weak = torch.randn(batch, 3, size, size, device=device)

    def step():
        loss = losses.relation_loss(*model(strong, weak))
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()  # warm-up
    if device.type == 'cuda':
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == 'cuda':
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    return batch * steps / elapsed, elapsed / steps


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--steps', type=int, default=5)
    parser.add_argument('--full', action='store_true', help='also the width-64 small-dataset recipe')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    args = parser.parse_args()
    device = torch.device(args.device)
    rows = [('embedded default: R18 w16, 32 px, B 32, K 512', dict(width=16, size=32, batch=32, K=512,
                                                                   hidden_dim=512, dim=128, bn_splits=4))]
    if args.full:
        rows.append(('small recipe: R18 w64, 32 px, B 256, K 4096', dict(width=64, size=32, batch=256, K=4096,
                                                                         hidden_dim=2048, dim=128, bn_splits=8)))
    print(f'device {device}, {torch.get_num_threads()} threads')
    for name, kw in rows:
        rate, per_step = bench(steps=args.steps, device=device, **kw)
        print(f'{name:48s} {rate:8.1f} img/s  {per_step * 1000:8.1f} ms/step')


if __name__ == '__main__':
    main()
