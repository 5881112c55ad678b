"""Params/FLOPs tables: NAS-Bench-Macro (all 6561 keys) and MCT-NAS-A/B/C on ImageNet, ours next to theirs.

    python tables.py --bench ../../shared/data/nas-bench-macro_cifar10.json            # a few seconds
    python tables.py --bench ../../shared/data/nas-bench-macro_cifar10.json --build    # + every Network built

Three independent counts are checked against the JSON ``params``/``flops`` for every key: (1) per-layer
costs of the real candidate modules (``SubnetCost`` on the supernet: parameters by ``numel``, MACs by
forward hooks) summed along the path; (2) the closed form of the card; (3) with ``--build``, every
``Network(arch)`` built and counted whole (slow: about 3 CPU-minutes for all 6561).
"""
import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

from benchmark import NASBenchMacro  # noqa: E402
from flops import SubnetCost, count_macs, count_params  # noqa: E402
from models.imagenet import MCTNAS_ARCHS, PAPER, build_mctnas  # noqa: E402
from models.nas_bench_macro import MacroSupernet, Network, analytic_params_macs, parse_arch  # noqa: E402

DEFAULT_BENCH = Path(__file__).resolve().parent / '../../shared/data/nas-bench-macro_cifar10.json'


def check_benchmark(bench, build=False, log=print):
    cost = SubnetCost(MacroSupernet(), (1, 3, 32, 32))
    keys = bench.keys()
    n_mod = n_closed = n_build = 0
    mismatches = []
    for k in keys:
        ref = bench.query(k)
        arch = parse_arch(k)
        ok_mod = cost.params(arch) == ref['params'] and cost.macs(arch) == ref['flops']
        ok_closed = analytic_params_macs(arch) == (ref['params'], ref['flops'])
        n_mod += ok_mod
        n_closed += ok_closed
        if not (ok_mod and ok_closed) and len(mismatches) < 5:
            mismatches.append((k, ref['params'], ref['flops'], cost.params(arch), cost.macs(arch)))
    log('NAS-Bench-Macro params and FLOPs (MACs at 32x32) equal to the benchmark\'s:')
    log(f'  per-layer costs of the real modules: {n_mod}/{len(keys)} architectures')
    log(f'  closed form of the spec card:        {n_closed}/{len(keys)} architectures')
    if build:
        torch.set_num_threads(1)
        for k in keys:
            ref = bench.query(k)
            net = Network(k)
            n_build += count_params(net) == ref['params'] and count_macs(net, (1, 3, 32, 32)) == ref['flops']
        log(f'  every Network(arch) built and counted: {n_build}/{len(keys)} architectures')
    for m in mismatches:
        log(f'  MISMATCH {m[0]}: benchmark params {m[1]} flops {m[2]}, ours {m[3]} / {m[4]}')
    return n_mod, n_closed, (n_build if build else None)


def imagenet_table(log=print):
    log('MCT-NAS ImageNet models (224x224; params; FLOPs = conv + FC MACs, SE convs included):')
    log(f'{"model":<10} {"params (ours)":>14} {"paper":>6}   {"FLOPs (ours)":>13} {"paper":>6}   '
        f'{"top-1 / top-5 (paper, needs GPUs)":>34}')
    rows = {}
    for name in MCTNAS_ARCHS:
        model = build_mctnas(name)
        p, f = count_params(model), count_macs(model, (1, 3, 224, 224))
        pf, pp, t1, t5 = PAPER[name]
        acc = f'{t1} / {t5}' if t1 is not None else 'n/a'
        log(f'{name:<10} {p / 1e6:>12.2f}M {("%.1fM" % pp) if pp else "n/a":>6}   {f / 1e6:>12.1f}M '
            f'{("%dM" % pf):>6}   {acc:>34}')
        rows[name] = (p, f)
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--bench', default=str(DEFAULT_BENCH), help='path of nas-bench-macro_cifar10.json')
    ap.add_argument('--build', action='store_true', help='also build and count every Network (slow)')
    ap.add_argument('--skip-imagenet', action='store_true')
    args = ap.parse_args(argv)
    if not args.skip_imagenet:
        imagenet_table()
        print()
    try:
        bench = NASBenchMacro(args.bench)
    except (FileNotFoundError, ValueError) as e:
        sys.stderr.write(f'error: {e}\n')
        return 2
    n_mod, n_closed, n_build = check_benchmark(bench, build=args.build)
    ok = n_mod == n_closed == len(bench) and (n_build is None or n_build == len(bench))
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
