"""Forward+backward time and activation memory of the EnTranNAS super-net relative to the plain DARTS super-net
on the same CPU batch (``python bench.py``; ``make bench``). Prints figures; asserts nothing.

S_normal: the number of (source, op) pairs the normal Transit-cells run (8 for the top-2 rule).
Memory: bytes of the tensors autograd saves for the backward pass (the activation memory that dominates the
peak), counted once per storage; on CUDA also torch.cuda.max_memory_allocated.
"""
import argparse
import statistics
import time

import torch
import torch.nn as nn

from model_search import Network


def saved_bytes(model, x, y):
    storages = {}

    def pack(t):
        try:
            st = t.untyped_storage()
            storages[st.data_ptr()] = st.nbytes()
        except (RuntimeError, NotImplementedError):
            pass
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model._loss(x, y)
    loss.backward()
    model.zero_grad(set_to_none=True)
    return sum(storages.values())


def fwd_bwd_time(model, x, y, repeats):
    times = []
    for i in range(repeats + 1):
        if x.is_cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        model._loss(x, y).backward()
        if x.is_cuda:
            torch.cuda.synchronize()
        if i > 0:  # the first run warms up
            times.append(time.perf_counter() - t0)
        model.zero_grad(set_to_none=True)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument('--size', type=int, default=32)
    ap.add_argument('--C', type=int, default=16)
    ap.add_argument('--layers', type=int, default=8)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument('--device', default='cpu')
    args = ap.parse_args()
    torch.manual_seed(0)
    device = torch.device(args.device)
    x = torch.randn(args.batch, 3, args.size, args.size, device=device)
    y = torch.randint(0, 10, (args.batch,), device=device)
    crit = nn.CrossEntropyLoss()
    nets = {
        'DARTS super-net (14 edges x 8 ops, every cell)': dict(mode='darts', feature_sharing=False),
        'EnTranNAS (feature sharing, Engine-cells 0 and 2)': dict(mode='entrannas'),
        'EnTranNAS-DST at init (beta = 0, alpha ~ 0: nothing pruned yet)': dict(mode='dst'),
        'EnTranNAS-DST, alpha ~ N(0, 1) (partly pruned, an illustration)': dict(mode='dst', alpha_std=1.0),
    }
    rows = []
    for name, kw in nets.items():
        alpha_std = kw.pop('alpha_std', None)
        net = Network(args.C, 10, args.layers, crit, **kw).to(device).train()
        if alpha_std is not None:
            with torch.no_grad():
                for a in net.arch_parameters()[:2]:
                    a.normal_(0, alpha_std)
            net.derive()
        if device.type == 'cuda':
            torch.cuda.reset_peak_memory_stats()
        mem = saved_bytes(net, x, y)
        t = fwd_bwd_time(net, x, y, args.repeats)
        peak = torch.cuda.max_memory_allocated() if device.type == 'cuda' else None
        pairs = len(net._active_normal)
        rows.append((name, t, mem, peak, pairs))
    base_t, base_m, base_p = rows[0][1], rows[0][2], rows[0][3]
    print(f'batch {args.batch}x3x{args.size}x{args.size}, C={args.C}, {args.layers} cells, device {device}, '
          f'torch {torch.__version__}, {torch.get_num_threads()} threads')
    print(f'{"super-net":66s} {"fwd+bwd s":>10s} {"x DARTS":>8s} {"saved MB":>9s} {"x DARTS":>8s} {"S_normal":>8s}'
          + (f' {"peak MB":>8s} {"x DARTS":>8s}' if base_p else ''))
    for name, t, m, p, pairs in rows:
        line = f'{name:66s} {t:10.3f} {t / base_t:8.2f} {m / 2**20:9.1f} {m / base_m:8.2f} {pairs:8d}'
        if p:
            line += f' {p / 2**20:8.1f} {p / base_p:8.2f}'
        print(line)
    print(f'speed-up of EnTranNAS over DARTS: {base_t / rows[1][1]:.2f}x time, {base_m / rows[1][2]:.2f}x '
          f'activation memory (the paper reports a large reduction; no absolute figure was recovered)')


if __name__ == '__main__':
    main()
