"""Commands that print the papers' numbers next to ours (CPU only).

    python tables.py check       # params and FLOPs of all 16384 archs of each Channel-Bench-Macro space
    python tables.py facts       # benchmark facts: best, full width, mean, min, expected best of N random
    python tables.py search      # width search with the benchmark as evaluator, prior vs uniform init
    python tables.py imagenet    # FLOPs/params of the ImageNet backbones and the released width configs
    python tables.py corr --scores FILE --space mobilenet [--exclude-width1]   # supernet ranking quality
    python tables.py             # check + facts + imagenet

The benchmark files are read from ``--data-dir`` (default ``../../shared/data`` from this folder, or
``$SHARED_DATA_DIR``); they are never copied here.
"""
import argparse
import glob
import itertools
import os
import sys
import time

import numpy as np
import yaml

from benchmark import ChannelBenchMacro, arch_key, expected_best, load_supernet_scores
from evaluator import BenchmarkEvaluator, benchmark_loss_records
from metrics import kendall_tau_b, pearson, spearman
from models.cbm import build_cbm, cbm_counts
from models.imagenet import MBV2_SETTINGS, mobilenetv2_channels, mobilenetv2_from_channels, resnet50_channels, \
    resnet50_from_channels
from sampler import BCNetSampler
from searcher import BCNetSearcher
from supernet import BCNetSupernet

FOLDER = os.path.dirname(os.path.abspath(__file__))
SPACES = ('mobilenet', 'resnet')
ALL_ARCHS = list(itertools.product(range(1, 5), repeat=7))

# The spec card's check rows (params, FLOPs in MACs, mean acc) and benchmark facts.
CARD_ROWS = {
    'mobilenet': [('1111111', 125418, 14285312), ('2222222', 467914, 54260736), ('3333333', 1027498, 119926272),
                  ('4444444', 1804170, 211281920), ('1234123', 325610, 37928448), ('4444342', 1388170, 185062400)],
    'resnet': [('1111111', 963658, 90096896), ('2222222', 3844234, 359500288), ('3333333', 8641738, 808210176),
               ('4444444', 15356170, 1436226560), ('1234123', 2735050, 245810432),
               ('4344424', 12701322, 1209734144)],
}
CARD_FACTS = {
    'mobilenet': {'best': ('4444342', 91.887), 'full': 91.663, 'mean': 90.82, 'min': 89.17, 'rand10': 91.38,
                  'rand100': 91.63},
    'resnet': {'best': ('4344424', 93.893), 'full': 93.617, 'mean': 93.10, 'min': 91.57, 'rand10': 93.52,
               'rand100': 93.69},
}
CARD_CORR = {  # (Pearson, Spearman, Kendall tau-b) of the official json_results, all archs / no width-1 layer
    ('mobilenet', 'AutoSlim'): ((0.854, 0.850, 0.661), (0.613, 0.588, 0.421)),
    ('mobilenet', 'BCNet run 3'): ((0.717, 0.719, 0.539), (-0.098, 0.055, 0.039)),
    ('resnet', 'AutoSlim'): ((0.841, 0.846, 0.656), (0.695, 0.693, 0.504)),
    ('resnet', 'BCNet run 3'): ((0.767, 0.743, 0.552), (0.090, 0.145, 0.099)),
}
SEARCH_BUDGETS = {'mobilenet': (50e6, 100e6, 150e6), 'resnet': (300e6, 600e6, 1000e6)}
IMAGENET_FULL = {'MobileNetV2 1.0x': (300.8e6, 3.50e6), 'ResNet-50': (4.089e9, 25.56e6)}


def data_path(data_dir, space):
    return os.path.join(data_dir, f'channel-bench-macro_{space}_cifar10.json')


def default_data_dir():
    env = os.environ.get('SHARED_DATA_DIR')
    return env if env else os.path.normpath(os.path.join(FOLDER, '..', '..', 'shared', 'data'))


def load_bench(data_dir, space):
    path = data_path(data_dir, space)
    if not os.path.isfile(path):
        sys.exit(f"error: benchmark file '{path}' not found (set --data-dir or SHARED_DATA_DIR)")
    return ChannelBenchMacro(path, space)


def flops_table(space):
    """Our closed-form MACs of every arch (tuple of digits -> MACs)."""
    return {a: cbm_counts(a, space)[1] for a in ALL_ARCHS}


# ------------------------------------------------------------------------------------------------ check
def cmd_check(args):
    ok = True
    for space in SPACES:
        bench = load_bench(args.data_dir, space)
        t0 = time.time()
        supernet = BCNetSupernet(build_cbm(space), 4, 1, (3, 32, 32))
        n = len(ALL_ARCHS)
        m_p = m_f = m_sp = m_sf = 0
        for a in ALL_ARCHS:
            row = bench.query(a)
            p, f = cbm_counts(a, space)
            m_p += p == row['params']
            m_f += f == row['flops']
            m_sp += supernet.params(list(a)) == row['params']
            m_sf += supernet.flops(list(a)) == row['flops']
        ok &= m_p == m_f == m_sp == m_sf == n
        print(f'[{space}] archs whose params / FLOPs equal the table: closed form {m_p}/{n} / {m_f}/{n}; '
              f'sliced supernet (4 bins) {m_sp}/{n} / {m_sf}/{n}  ({time.time() - t0:.1f}s)')
        print(f'  {"arch":8s} {"card params":>12s} {"table":>12s} {"ours":>12s} {"card MACs":>14s} '
              f'{"table":>14s} {"ours":>14s}')
        for arch, cp, cf in CARD_ROWS[space]:
            row = bench.query(arch)
            p, f = cbm_counts(arch, space)
            print(f'  {arch:8s} {cp:12,d} {row["params"]:12,d} {p:12,d} {cf:14,d} {row["flops"]:14,d} {f:14,d}')
    return 0 if ok else 1


# ------------------------------------------------------------------------------------------------ facts
def cmd_facts(args):
    for space in SPACES:
        bench, card = load_bench(args.data_dir, space), CARD_FACTS[space]
        best, acc = bench.best()
        print(f'[{space}] (card -> ours)')
        print(f'  best arch          {card["best"][0]} {card["best"][1]:.3f} -> {best} {acc:.3f}')
        print(f'  full width 4444444 {card["full"]:.3f} -> {bench.mean("4444444"):.3f} '
              f'(rank {bench.rank("4444444")})')
        print(f'  mean / min         {card["mean"]:.2f} / {card["min"]:.2f} -> {bench.means.mean():.2f} / '
              f'{bench.means.min():.2f}')
        print(f'  E[best of N random] N=10 {card["rand10"]:.2f} -> {bench.expected_best_of_random(10):.2f}; '
              f'N=100 {card["rand100"]:.2f} -> {bench.expected_best_of_random(100):.2f}')
    return 0


# ------------------------------------------------------------------------------------------------ search
def cmd_search(args):
    print(f'Width search with the benchmark as evaluator: {args.seeds} seeds, population {args.population}, '
          f'{args.max_epoch} generations (<= {args.population * args.max_epoch} evaluations), FLOPs window '
          f'[0.8 L, L]; prior records from a simulated {args.steps}-step supernet run (loss = test error of '
          f'one of the 3 benchmark runs), target factor {args.target_factor}.')
    print('Paper (BCNet, CVPR 2021): the prior initial population "boosts the performance of the evolutionary '
          'search"; its Channel-Bench-Macro search table (BCNetV2) was not retrievable here.')
    t_all = time.time()
    for space in args.spaces:
        bench = load_bench(args.data_dir, space)
        supernet = BCNetSupernet(build_cbm(space), 4, 1, (3, 32, 32))
        choices, layer_flops = supernet.get_channel_choices(), supernet.get_layer_flops()
        ftab = flops_table(space)
        flops_fn = lambda c: ftab[tuple(c)]   # noqa: E731  (our analytic counts, equal to the table's)
        evaluator = BenchmarkEvaluator(bench)
        records = {seed: benchmark_loss_records(bench, BCNetSampler(4, 1, rng=seed), args.steps, 100, rng=seed)
                   for seed in range(args.seeds)}
        budgets = args.budgets.get(space, SEARCH_BUDGETS[space])
        print(f'\n[{space}]')
        print(f'{"budget":>7s} {"window":>6s} {"best in window":>17s} | {"init":8s} {"found acc":>13s} '
              f'{"rank mean/med":>14s} {"win-rank":>8s} {"hit":>5s} {"evals":>5s} {"init-pop acc":>12s} '
              f'{"random@evals":>12s}')
        for L in budgets:
            win = [k for k in bench.keys if 0.8 * L <= bench.table[k]['flops'] <= L]
            win_accs = np.array([bench.table[k]['mean'] for k in win])
            wbest = win[int(np.argmax(win_accs))]
            sorted_win = np.sort(win_accs)[::-1]
            for prior in (False, True):
                rows = []
                for seed in range(args.seeds):
                    s = BCNetSearcher(4, 1, prior_init=prior, max_epoch=args.max_epoch,
                                      population_num=args.population, top_k_num=10,
                                      mutation_num=args.population // 2, mutation_prob=0.1,
                                      crossover_num=args.population // 2, flops_limit=L, seed=seed,
                                      target_factor=args.target_factor)
                    r = s.search(choices, evaluator, flops_fn, layer_flops, records[seed])
                    acc = r['score']
                    init_acc = np.mean([bench.mean(c) for c in s.initial_population]) if s.initial_population \
                        else float('nan')
                    win_rank = int(np.searchsorted(-sorted_win, -acc, side='left')) + 1
                    rows.append((acc, bench.rank(r['best']), win_rank, arch_key(r['best']) == wbest,
                                 r['evaluated'], init_acc))
                a = np.array(rows, dtype=np.float64)
                name = 'prior' if prior else 'uniform'
                print(f'{L / 1e6:6.0f}M {len(win):6d} {bench.table[wbest]["mean"]:7.3f} (#{bench.rank(wbest):>6d}) | '
                      f'{name:8s} {a[:, 0].mean():7.3f}±{a[:, 0].std():5.3f} {a[:, 1].mean():7.0f}/'
                      f'{np.median(a[:, 1]):<6.0f} {a[:, 2].mean():8.1f} {100 * a[:, 3].mean():4.0f}% '
                      f'{a[:, 4].mean():5.0f} {np.nanmean(a[:, 5]):12.3f} '
                      f'{expected_best(win_accs, max(1, round(a[:, 4].mean()))):12.3f}')
    print(f'\n(found acc: benchmark mean accuracy of the best arch found, mean±std over seeds; rank: among all '
          f'16384 archs; win-rank: among the archs of the FLOPs window; hit: found the window\'s best; '
          f'init-pop acc: mean accuracy of the first population; random@evals: expected best of as many '
          f'uniform draws from the window)  [{time.time() - t_all:.0f}s]')
    return 0


# ------------------------------------------------------------------------------------------------ corr
def cmd_corr(args):
    bench = load_bench(args.data_dir, args.space)
    scores = load_supernet_scores(args.scores)
    keys = [k for k in bench.keys if k != '4444444' and k in scores]
    if args.exclude_width1:
        keys = [k for k in keys if '1' not in k]
    if len(keys) < 2:
        sys.exit('error: fewer than 2 archs in common between the scores and the benchmark')
    x = np.array([scores[k] for k in keys])
    y = np.array([bench.mean(k) for k in keys])
    print(f'[{args.space}] {os.path.basename(args.scores)}: {len(keys)} archs'
          f'{" without width-1 layers" if args.exclude_width1 else ""}: Pearson {pearson(x, y):.3f}  '
          f'Spearman {spearman(x, y):.3f}  Kendall tau-b {kendall_tau_b(x, y):.3f}')
    print('card (official json_results; all archs | no width-1 layer):')
    for (space, name), (a, b) in CARD_CORR.items():
        if space == args.space:
            print(f'  {name:12s} {a[0]:6.3f} {a[1]:6.3f} {a[2]:6.3f} | {b[0]:6.3f} {b[1]:6.3f} {b[2]:6.3f}')
    return 0


# ------------------------------------------------------------------------------------------------ imagenet
def _mbv2_supernet(backbone, bins):
    settings = [tuple(r) for r in backbone.get('settings', MBV2_SETTINGS)]
    ch = mobilenetv2_channels(1.0, backbone.get('stem'), settings, backbone.get('last'))
    return BCNetSupernet(mobilenetv2_from_channels(ch, 1000, settings), bins, 1, (3, 224, 224))


def cmd_imagenet(args):
    print('Full-width ImageNet backbones at 224x224 (card -> ours, conv + FC MACs):')
    for name, net in (('MobileNetV2 1.0x', mobilenetv2_from_channels(mobilenetv2_channels())),
                      ('ResNet-50', resnet50_from_channels(resnet50_channels()))):
        sn = BCNetSupernet(net, 20, 1, (3, 224, 224))
        cm, cp = IMAGENET_FULL[name]
        print(f'  {name:18s} {cm / 1e6:9.1f}M MACs {cp / 1e6:6.2f}M params -> '
              f'{sn.flops(sn.full_choices()) / 1e6:9.1f}M MACs {sn.params(sn.full_choices()) / 1e6:6.2f}M params'
              f'  ({sn.num_slots} searchable slots)')
    files = sorted(glob.glob(os.path.join(FOLDER, 'configs', 'retrain_mbv2_*.yaml')))
    print('Released BCNetV2 MobileNetV2 widths (configs/retrain_mbv2_*.yaml: 25 slot choices, 20 bins):')
    for path in files:
        with open(path) as f:
            c = yaml.safe_load(f)
        sn = _mbv2_supernet(c['model'].get('backbone', {}), c['bcnet']['channel_bins'])
        w = c['retrain']['widths']
        budget = os.path.basename(path)[len('retrain_mbv2_'):-len('.yaml')].split('_')[0]
        print(f'  {os.path.basename(path):34s} budget {budget:>5s}: '
              f'{sn.flops(w) / 1e6:7.1f}M MACs {sn.params(w) / 1e6:5.2f}M params '
              f'(full-width supernet {sn.flops(sn.full_choices()) / 1e6:.1f}M)')
    print('The searched ResNet-50 (3G/2G/1G/0.57G) and MobileNetV2 (217M/150M/105M/50M) lists of '
          'BCNet/temp/search_results.xlsx are not reproduced: the spreadsheet could not be read here (see README).')
    return 0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('command', nargs='?', default='all', choices=['all', 'check', 'facts', 'search', 'corr',
                                                                  'imagenet'])
    p.add_argument('--data-dir', default=default_data_dir())
    p.add_argument('--seeds', type=int, default=50)
    p.add_argument('--max-epoch', type=int, default=4, help='generations of the search (official: 40)')
    p.add_argument('--population', type=int, default=50)
    p.add_argument('--steps', type=int, default=11760, help='simulated supernet steps (60 epochs x 196)')
    p.add_argument('--target-factor', type=float, default=0.4)
    p.add_argument('--spaces', nargs='+', default=list(SPACES), choices=SPACES)
    p.add_argument('--budget', action='append', default=[], metavar='SPACE=MACS',
                   help='override the budgets of a space, e.g. --budget mobilenet=50e6,100e6')
    p.add_argument('--scores')
    p.add_argument('--space', choices=SPACES, default='mobilenet')
    p.add_argument('--exclude-width1', action='store_true')
    args = p.parse_args(argv)
    args.budgets = {}
    for item in args.budget:
        space, _, vals = item.partition('=')
        args.budgets[space] = tuple(float(v) for v in vals.split(','))
    if args.command == 'corr':
        if not args.scores:
            p.error('corr needs --scores FILE')
        return cmd_corr(args)
    if args.command == 'all':
        return max(cmd_check(args), cmd_facts(args), cmd_imagenet(args))
    return {'check': cmd_check, 'facts': cmd_facts, 'search': cmd_search, 'imagenet': cmd_imagenet}[args.command](args)


if __name__ == '__main__':
    sys.exit(main())
